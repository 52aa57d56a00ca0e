// The store's job queue: bounded, never waits on a push, and a store thread's
// wait can be ended without a job (wake).
#include "store/work_queue.hpp"

#include <gtest/gtest.h>

#include <future>

namespace chat::store {
namespace {

using namespace std::chrono_literals;

TEST(StoreWorkQueue, AFullQueueRefusesAtOnceAndKeepsTheJob) {
  WorkQueue<int> queue(2);
  int one = 1, two = 2, three = 3;
  EXPECT_TRUE(queue.try_push(std::move(one)));
  EXPECT_TRUE(queue.try_push(std::move(two)));
  EXPECT_FALSE(queue.try_push(std::move(three)));
  EXPECT_EQ(three, 3);
  EXPECT_EQ(queue.pop(0ms), 1);
  EXPECT_EQ(queue.try_pop(), 2);
  EXPECT_EQ(queue.try_pop(), std::nullopt);
}

TEST(StoreWorkQueue, WakeEndsALongWaitWithoutAJob) {
  WorkQueue<int> queue(1);
  auto waited = std::async(std::launch::async, [&] { return queue.pop(std::chrono::hours(1)); });
  std::this_thread::sleep_for(50ms);  // most often already waiting; if not, the wake is kept for it
  queue.wake();
  ASSERT_EQ(waited.wait_for(30s), std::future_status::ready) << "the wait went on after wake()";
  EXPECT_EQ(waited.get(), std::nullopt);
  // Used up: the next wait waits.
  EXPECT_EQ(queue.pop(10ms), std::nullopt);
  int job = 7;
  ASSERT_TRUE(queue.try_push(std::move(job)));
  EXPECT_EQ(queue.pop(std::chrono::hours(1)), 7);
}

TEST(StoreWorkQueue, AWakeBeforeTheWaitIsNotLost) {
  WorkQueue<int> queue(1);
  queue.wake();
  auto waited = std::async(std::launch::async, [&] { return queue.pop(std::chrono::hours(1)); });
  ASSERT_EQ(waited.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(waited.get(), std::nullopt);
}

TEST(StoreWorkQueue, ClosedItHandsOutWhatItHoldsThenNothing) {
  WorkQueue<int> queue(4);
  int job = 1;
  ASSERT_TRUE(queue.try_push(std::move(job)));
  queue.close();
  int late = 2;
  EXPECT_FALSE(queue.try_push(std::move(late)));
  EXPECT_FALSE(queue.closed_and_empty());
  EXPECT_EQ(queue.pop(std::chrono::hours(1)), 1);
  EXPECT_TRUE(queue.closed_and_empty());
  EXPECT_EQ(queue.pop(std::chrono::hours(1)), std::nullopt);
}

}  // namespace
}  // namespace chat::store
