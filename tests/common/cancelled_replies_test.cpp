#include "common/cancelled_replies.hpp"

#include <gtest/gtest.h>

namespace chat {
namespace {

using namespace std::chrono_literals;
const auto t0 = CancelledReplies::Clock::time_point{} + 1h;

TEST(CancelledReplies, ACancelledReplyIsRememberedWithItsOwnerForAWhile) {
  CancelledReplies cancelled(10min, 100);
  cancelled.remember("m1", "alice", "s1", t0);
  auto* m1 = cancelled.find("m1", t0 + 9min);
  ASSERT_NE(m1, nullptr);
  EXPECT_EQ(m1->user_id, "alice");
  EXPECT_EQ(m1->session_id, "s1");
  EXPECT_EQ(cancelled.find("m2", t0 + 9min), nullptr);
  EXPECT_EQ(cancelled.find("m1", t0 + 10min), nullptr) << "kept for ten minutes, not longer";
  EXPECT_EQ(cancelled.size(), 0u);
}

TEST(CancelledReplies, TheOldestGoFirstBeyondTheBound) {
  CancelledReplies cancelled(10min, 2);
  cancelled.remember("m1", "a", "s", t0);
  cancelled.remember("m2", "b", "s", t0 + 1s);
  cancelled.remember("m1", "a", "s", t0 + 2s);  // cancelled again while running: the first time counts
  cancelled.remember("m3", "c", "s", t0 + 3s);
  EXPECT_EQ(cancelled.size(), 2u);
  EXPECT_EQ(cancelled.find("m1", t0 + 4s), nullptr);
  EXPECT_NE(cancelled.find("m2", t0 + 4s), nullptr);
  ASSERT_NE(cancelled.find("m3", t0 + 4s), nullptr);
  EXPECT_EQ(cancelled.find("m3", t0 + 4s)->user_id, "c");
}

}  // namespace
}  // namespace chat
