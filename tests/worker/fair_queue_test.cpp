#include "worker/fair_queue.hpp"

#include <gtest/gtest.h>

namespace chat::worker {
namespace {

// A delivery that is this queue's last, or not.
class Item final : public bus::WorkItem {
 public:
  explicit Item(bool final, unsigned attempt = 1) : final_(final), attempt_(attempt) {}
  std::string_view payload() const override { return {}; }
  std::string_view subject() const override { return {}; }
  std::string header(std::string_view) const override { return {}; }
  unsigned attempt() const override { return attempt_; }
  bool final_attempt() const override { return final_; }
  void in_progress() override { ++in_progress_calls; }
  int in_progress_calls = 0;
  void ack() override {}
  void give_back() override {}

 private:
  bool final_;
  unsigned attempt_;
};

WaitingRequest waiting(std::string user, std::string message, bool final = false) {
  WaitingRequest w;
  w.request.user_id = std::move(user);
  w.request.message_id = std::move(message);
  w.item = std::make_unique<Item>(final);
  return w;
}

auto none_running = [](const std::string&) -> std::size_t { return 0; };

std::vector<std::string> drain(FairQueue& q) {
  std::vector<std::string> out;
  while (auto w = q.pop(none_running)) out.push_back(w->request.message_id);
  return out;
}

// The worker refuses a request the full queue did not take: it must still
// have it, its work item included, to answer it.
TEST(FairQueue, AFullQueueLeavesTheRequestItRefusedWhole) {
  FairQueue q(1);
  ASSERT_TRUE(q.push(waiting("a", "a1")));
  auto refused = waiting("b", "b1");
  EXPECT_FALSE(q.push(std::move(refused)));
  EXPECT_EQ(refused.request.message_id, "b1");  // NOLINT(bugprone-use-after-move): push moves only what it takes
  EXPECT_NE(refused.item, nullptr);
  EXPECT_EQ(q.size(), 1u);
}

TEST(FairQueue, UsersTakeTurns) {
  FairQueue q(100);
  for (auto id : {"a1", "a2", "a3"}) q.push(waiting("a", id));
  for (auto id : {"b1", "b2"}) q.push(waiting("b", id));
  q.push(waiting("c", "c1"));
  EXPECT_EQ(drain(q), (std::vector<std::string>{"a1", "b1", "c1", "a2", "b2", "a3"}));
}

TEST(FairQueue, AUserWithFewerRunningRepliesGoesFirst) {
  FairQueue q(100);
  q.push(waiting("busy", "x1"));
  q.push(waiting("idle", "y1"));
  auto w = q.pop([](const std::string& user) -> std::size_t { return user == "busy" ? 3 : 0; });
  EXPECT_EQ(w->request.message_id, "y1");
}

TEST(FairQueue, IsBounded) {
  FairQueue q(2);
  EXPECT_TRUE(q.push(waiting("a", "1")));
  EXPECT_TRUE(q.push(waiting("a", "2")));
  EXPECT_FALSE(q.push(waiting("b", "3")));
  EXPECT_EQ(q.size(), 2u);
}

TEST(FairQueue, ACancelledRequestLeavesAndItsUserLosesNoTurn) {
  FairQueue q(100);
  q.push(waiting("a", "a1"));
  q.push(waiting("b", "b1"));
  q.push(waiting("a", "a2"));
  ASSERT_NE(q.find("b1"), nullptr);
  EXPECT_TRUE(q.remove("b1"));
  EXPECT_EQ(q.find("b1"), nullptr);
  EXPECT_FALSE(q.remove("b1"));
  EXPECT_EQ(drain(q), (std::vector<std::string>{"a1", "a2"}));
}

TEST(FairQueue, ShutdownGivesBackOnlyWhatAnotherWorkerCanTake) {
  FairQueue q(100);
  q.push(waiting("a", "redeliverable"));
  q.push(waiting("b", "last-delivery", true));
  auto back = q.take_redeliverable();
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].request.message_id, "redeliverable");
  EXPECT_EQ(drain(q), (std::vector<std::string>{"last-delivery"}));
}

TEST(FairQueue, ANewerDeliveryOfAWaitingRequestTakesTheOldOnesPlace) {
  FairQueue q(100);
  q.push(waiting("a", "a1"));
  q.push(waiting("a", "a2"));
  auto newer = std::make_unique<Item>(false, 2);
  auto* newer_item = newer.get();
  std::unique_ptr<bus::WorkItem> delivery = std::move(newer);
  EXPECT_TRUE(q.take_newer_delivery("a2", delivery));
  EXPECT_EQ(delivery, nullptr);
  EXPECT_EQ(newer_item->in_progress_calls, 1) << "the queue hears at once that it is still held";
  EXPECT_EQ(q.size(), 2u) << "still one request, not two";
  auto first = q.pop(none_running);
  auto second = q.pop(none_running);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->request.message_id, "a2");
  EXPECT_EQ(second->item->attempt(), 2u);
  std::unique_ptr<bus::WorkItem> stray = std::make_unique<Item>(false, 2);
  EXPECT_FALSE(q.take_newer_delivery("zz", stray));
  EXPECT_NE(stray, nullptr);
}

}  // namespace
}  // namespace chat::worker
