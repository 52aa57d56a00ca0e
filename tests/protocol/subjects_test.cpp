#include "protocol/subjects.hpp"

#include <gtest/gtest.h>

namespace chat::subjects {
namespace {

TEST(SubjectsTest, NamesFollowTheContract) {
  EXPECT_EQ(execute("s1"), "chat.workflow.execute.s1");
  EXPECT_EQ(pod_response("pod-1"), "chat.pod.pod-1.response");
  EXPECT_EQ(pod_health("pod-1"), "chat.pod.pod-1.health");
  EXPECT_EQ(broadcast("s1"), "chat.session.s1.broadcast");
  EXPECT_EQ(cancel("m1"), "chat.workflow.cancel.m1");
}

TEST(SubjectsTest, WildcardsMatchLikeNats) {
  EXPECT_TRUE(matches("chat.workflow.execute.*", "chat.workflow.execute.s1"));
  EXPECT_FALSE(matches("chat.workflow.execute.*", "chat.workflow.execute.s1.x"));
  EXPECT_FALSE(matches("chat.workflow.execute.*", "chat.workflow.execute"));
  EXPECT_TRUE(matches("chat.session.*.broadcast", "chat.session.abc.broadcast"));
  EXPECT_FALSE(matches("chat.session.*.broadcast", "chat.session.abc.other"));
  EXPECT_TRUE(matches("chat.>", "chat.pod.p.response"));
  EXPECT_FALSE(matches("chat.>", "chat"));
  EXPECT_TRUE(matches("a.b", "a.b"));
  EXPECT_FALSE(matches("a.b", "a.c"));
  EXPECT_FALSE(matches("a.*", "a."));
}

}  // namespace
}  // namespace chat::subjects
