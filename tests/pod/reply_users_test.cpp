#include "pod/reply_users.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace chat::pod {
namespace {

using namespace std::chrono_literals;

TEST(ReplyUsers, AReplysUserIsTakenOnce) {
  ReplyUsers users(10min);
  users.accepted("m1", "u1");
  users.accepted("m2", "u2");
  EXPECT_EQ(users.take("m2"), "u2");
  EXPECT_EQ(users.take("m2"), std::nullopt);
  EXPECT_EQ(users.take("m1"), "u1");
  EXPECT_EQ(users.take("never"), std::nullopt);
}

TEST(ReplyUsers, AReplyNeverEndedHereIsForgottenOnceItsTimeIsOver) {
  ReplyUsers users(20ms);
  users.accepted("silent", "u1");
  std::this_thread::sleep_for(30ms);
  users.accepted("next", "u2");
  EXPECT_EQ(users.take("silent"), std::nullopt);
  EXPECT_EQ(users.take("next"), "u2");
}

}  // namespace
}  // namespace chat::pod
