#include "bus/subject_pattern.hpp"

#include <gtest/gtest.h>

namespace chat::bus {
namespace {

TEST(SubjectPattern, WildcardsMatchLikeNats) {
  EXPECT_TRUE(subject_matches("chat.workflow.execute.*", "chat.workflow.execute.s1"));
  EXPECT_FALSE(subject_matches("chat.workflow.execute.*", "chat.workflow.execute.s1.x"));
  EXPECT_FALSE(subject_matches("chat.workflow.execute.*", "chat.workflow.execute"));
  EXPECT_TRUE(subject_matches("chat.session.*.broadcast", "chat.session.abc.broadcast"));
  EXPECT_FALSE(subject_matches("chat.session.*.broadcast", "chat.session.abc.other"));
  EXPECT_TRUE(subject_matches("chat.>", "chat.pod.p.response"));
  EXPECT_FALSE(subject_matches("chat.>", "chat"));
  EXPECT_TRUE(subject_matches("a.b", "a.b"));
  EXPECT_FALSE(subject_matches("a.b", "a.c"));
  EXPECT_FALSE(subject_matches("a.*", "a."));
}

}  // namespace
}  // namespace chat::bus
