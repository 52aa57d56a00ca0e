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

}  // namespace
}  // namespace chat::subjects
