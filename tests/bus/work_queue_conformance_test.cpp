// The WorkQueue contract (bus/work_queue.hpp), against the in-process queue
// group and against JetStream on a real nats-server.

#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "bus/durable_test_support.hpp"
#include "bus/bus_test_support.hpp"
#include "common/identifier.hpp"

namespace chat::test {
namespace {

using namespace std::chrono_literals;

// Takes every delivery; the test decides what to do with each.
class Taker {
 public:
  bus::WorkHandler handler() {
    return [this](std::unique_ptr<bus::WorkItem> item) {
      std::lock_guard lock(mutex_);
      items_.push_back(std::move(item));
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex_);
    return items_.size();
  }
  std::unique_ptr<bus::WorkItem> take(std::size_t i) {
    std::lock_guard lock(mutex_);
    return std::move(items_.at(i));
  }
  std::vector<std::string> payloads() {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& i : items_)
      if (i) out.emplace_back(i->payload());
    return out;
  }

 private:
  std::mutex mutex_;  // guards items_: handlers run on queue threads
  std::vector<std::unique_ptr<bus::WorkItem>> items_;
};

bus::FreeSlots slots(std::size_t n) {
  return [n] { return n; };
}

boost::system::error_code submit(bus::WorkQueue& q, const std::string& payload, const std::string& id,
                                 bus::Headers headers = {}) {
  std::promise<boost::system::error_code> done;
  q.submit("chat.workflow.execute.s1", payload, id, std::move(headers),
           [&](boost::system::error_code ec) { done.set_value(ec); });
  auto f = done.get_future();
  if (f.wait_for(20s) != std::future_status::ready) return boost::asio::error::timed_out;
  return f.get();
}

template <class Impl>
class WorkQueueConformance : public ::testing::Test {
 protected:
  Impl impl_;
};

struct ImplName {
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

using Implementations = ::testing::Types<MemoryDurable, JetStreamDurable>;
TYPED_TEST_SUITE(WorkQueueConformance, Implementations, ImplName);

TYPED_TEST(WorkQueueConformance, EachRequestGoesToOneWorker) {
  Taker a, b;
  auto sa = this->impl_.queue(1).consume(slots(100), a.handler());
  auto sb = this->impl_.queue(2).consume(slots(100), b.handler());
  std::this_thread::sleep_for(200ms);  // both subscribed (a queue group has no "ready" signal)
  for (int i = 0; i < 20; ++i) ASSERT_FALSE(submit(this->impl_.queue(0), "r" + std::to_string(i), new_identifier("m")));
  ASSERT_TRUE(wait_until([&] { return a.size() + b.size() == 20; }));
  std::set<std::string> all;
  for (auto& p : a.payloads()) all.insert(p);
  for (auto& p : b.payloads()) all.insert(p);
  EXPECT_EQ(all.size(), 20u);
  for (std::size_t i = 0; i < a.size(); ++i) a.take(i)->ack();
  for (std::size_t i = 0; i < b.size(); ++i) b.take(i)->ack();
}

TYPED_TEST(WorkQueueConformance, AFirstDeliveryIsAttemptOne) {
  Taker t;
  auto s = this->impl_.queue(1).consume(slots(10), t.handler());
  std::this_thread::sleep_for(200ms);
  ASSERT_FALSE(submit(this->impl_.queue(0), "r", new_identifier("m")));
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }));
  auto item = t.take(0);
  EXPECT_EQ(item->attempt(), 1u);
  EXPECT_EQ(item->payload(), "r");
  EXPECT_EQ(item->subject(), "chat.workflow.execute.s1");
  item->ack();
}

// The trace context travels beside the request, also when it is delivered again.
TYPED_TEST(WorkQueueConformance, HeadersTravelWithTheRequest) {
  Taker t;
  auto s = this->impl_.queue(1).consume(slots(10), t.handler());
  std::this_thread::sleep_for(200ms);
  const std::string traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  ASSERT_FALSE(submit(this->impl_.queue(0), "traced", new_identifier("m"),
                      {{"traceparent", traceparent}, {"tracestate", "a=1"}}));
  ASSERT_FALSE(submit(this->impl_.queue(0), "plain", new_identifier("m")));
  ASSERT_TRUE(wait_until([&] { return t.size() == 2; }));
  auto traced = t.take(0), plain = t.take(1);
  if (traced->payload() != "traced") std::swap(traced, plain);
  EXPECT_EQ(traced->header("traceparent"), traceparent);
  EXPECT_EQ(traced->header("tracestate"), "a=1");
  EXPECT_EQ(plain->header("traceparent"), "");
  traced->give_back();
  plain->ack();
  ASSERT_TRUE(wait_until([&] { return t.size() == 3; }));
  auto again = t.take(2);
  EXPECT_EQ(again->header("traceparent"), traceparent);
  again->ack();
}

TYPED_TEST(WorkQueueConformance, ARequestGivenBackIsDeliveredAgain) {
  Taker t;
  auto s = this->impl_.queue(1).consume(slots(10), t.handler());
  std::this_thread::sleep_for(200ms);
  ASSERT_FALSE(submit(this->impl_.queue(0), "again", new_identifier("m")));
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }));
  t.take(0)->give_back();
  ASSERT_TRUE(wait_until([&] { return t.size() == 2; }));
  auto second = t.take(1);
  EXPECT_EQ(second->payload(), "again");
  second->ack();
}

// JetStream only: what makes the queue durable.
class JetStreamWorkQueue : public ::testing::Test {
 protected:
  JetStreamDurable impl_;
};

TEST_F(JetStreamWorkQueue, RequestsSubmittedWhileNoWorkerRunsAreDeliveredWhenOneStarts) {
  for (int i = 0; i < 3; ++i) ASSERT_FALSE(submit(impl_.queue(0), "early" + std::to_string(i), new_identifier("m")));
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_TRUE(wait_until([&] { return t.size() == 3; }));
  EXPECT_EQ(t.payloads(), (std::vector<std::string>{"early0", "early1", "early2"}));
  for (int i = 0; i < 3; ++i) t.take(static_cast<std::size_t>(i))->ack();
}

TEST_F(JetStreamWorkQueue, TheSameIdIsQueuedOnce) {
  auto id = new_identifier("m");
  ASSERT_FALSE(submit(impl_.queue(0), "once", id));
  ASSERT_FALSE(submit(impl_.queue(0), "once", id));
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(t.size(), 1u);
  t.take(0)->ack();
}

TEST_F(JetStreamWorkQueue, ARequestAWorkerDiedWithComesBackAsTheNextAttemptUntilTheLast) {
  ASSERT_FALSE(submit(impl_.queue(0), "doomed", new_identifier("m")));
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  // Never acked: redelivered after AckWait, up to MaxDeliver (3) times.
  ASSERT_TRUE(wait_until([&] { return t.size() == 3; }, 30s));
  EXPECT_EQ(t.take(0)->attempt(), 1u);
  auto second = t.take(1);
  EXPECT_EQ(second->attempt(), 2u);
  EXPECT_FALSE(second->final_attempt());
  auto last = t.take(2);
  EXPECT_EQ(last->attempt(), 3u);
  EXPECT_TRUE(last->final_attempt());
}

TEST_F(JetStreamWorkQueue, InProgressHoldsOffTheRedelivery) {
  ASSERT_FALSE(submit(impl_.queue(0), "slow", new_identifier("m")));
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }));
  auto item = t.take(0);
  for (int i = 0; i < 8; ++i) {  // 4 s, well past AckWait (1.5 s)
    item->in_progress();
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_EQ(t.size(), 1u);
  item->ack();
}

TEST_F(JetStreamWorkQueue, AWorkerTakesNoMoreThanItsFreeSlots) {
  for (int i = 0; i < 10; ++i) ASSERT_FALSE(submit(impl_.queue(0), "r" + std::to_string(i), new_identifier("m")));
  std::atomic<std::size_t> taken{0};
  Taker t;
  auto s = impl_.queue(1).consume([&] { return taken.load() < 4 ? 4 - taken.load() : 0; },
                                  [&](std::unique_ptr<bus::WorkItem> item) {
                                    ++taken;
                                    t.handler()(std::move(item));
                                  });
  ASSERT_TRUE(wait_until([&] { return t.size() == 4; }));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(t.size(), 4u);
}

// The JetStream calls of one client run in order on its JetStream thread: a
// log read answered means every withdraw() asked before it is done.
void after_withdraws(JetStreamDurable& impl) {
  std::promise<void> read;
  impl.log(0).read("s1", "m_barrier", [&](boost::system::error_code, std::vector<std::string>) { read.set_value(); });
  read.get_future().wait();
}

TEST_F(JetStreamWorkQueue, AWithdrawnRequestIsNeverDelivered) {
  auto withdrawn = new_identifier("m");
  ASSERT_FALSE(submit(impl_.queue(0), "withdrawn", withdrawn));
  impl_.queue(0).withdraw("chat.workflow.execute.s1", withdrawn);
  after_withdraws(impl_);
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_FALSE(submit(impl_.queue(0), "next", new_identifier("m")));
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(t.payloads(), std::vector<std::string>{"next"}) << "no worker gets a request its pod withdrew";
  t.take(0)->ack();
}

TEST_F(JetStreamWorkQueue, ARequestWithdrawnWhileAWorkerHoldsItIsNotDeliveredAgain) {
  auto id = new_identifier("m");
  ASSERT_FALSE(submit(impl_.queue(0), "held", id));
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }));
  impl_.queue(0).withdraw("chat.workflow.execute.s1", id);  // its worker was sent the cancel
  after_withdraws(impl_);
  std::this_thread::sleep_for(4s);  // past AckWait (1.5 s), twice
  EXPECT_EQ(t.size(), 1u) << "the server takes the delete for its ack";
  t.take(0)->ack();  // the worker's own ack, late: nothing happens
}

TEST_F(JetStreamWorkQueue, AWithdrawFindsItsRequestAmongTheSessionsAndDeletesOnlyThatOne) {
  auto older = new_identifier("m");
  auto newer = new_identifier("m");
  ASSERT_FALSE(submit(impl_.queue(0), "older", older));
  ASSERT_FALSE(submit(impl_.queue(0), "newer", newer));
  ASSERT_FALSE(submit(impl_.queue(0), "newest", new_identifier("m")));
  impl_.queue(0).withdraw("chat.workflow.execute.s2", older);  // not on that session's subject
  impl_.queue(0).withdraw("chat.workflow.execute.s1", new_identifier("m"));  // not queued at all
  impl_.queue(0).withdraw("chat.workflow.execute.s1", newer);  // neither the session's first nor its last
  after_withdraws(impl_);
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_TRUE(wait_until([&] { return t.size() >= 2; }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(t.payloads(), (std::vector<std::string>{"older", "newest"}));
  for (std::size_t i = 0; i < t.size(); ++i) t.take(i)->ack();
}

// A reply ended while the server was away (its user cancelled it, its session
// was deleted, its submit failed without an answer): its request is withdrawn
// once the server is back, before a worker can run it.
TEST_F(JetStreamWorkQueue, AWithdrawAskedWhileTheServerIsAwayIsDoneOnceItIsBack) {
  auto id = new_identifier("m");
  ASSERT_FALSE(submit(impl_.queue(0), "withdrawn", id));
  impl_.server().stop();
  ASSERT_TRUE(wait_until([&] { return !impl_.queue(0).status().connected; }));
  impl_.queue(0).withdraw("chat.workflow.execute.s1", id);
  impl_.server().start();
  ASSERT_TRUE(wait_until([&] { return impl_.queue(0).status().connected; }, 20s));
  // Its JetStream thread looks for the server every 0.1 s; then the log read
  // queued behind the withdraw answers.
  std::this_thread::sleep_for(500ms);
  after_withdraws(impl_);
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_FALSE(submit(impl_.queue(0), "next", new_identifier("m")));
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }, 20s));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(t.payloads(), std::vector<std::string>{"next"}) << "no worker gets a request withdrawn while away";
  t.take(0)->ack();
}

// The server is frozen when the request goes out and killed before it reads
// it: the request was never stored, and its acknowledgement cannot come. The
// queue publishes it again once the server is back, so the chat its caller is
// told went through is queued, once.
TEST_F(JetStreamWorkQueue, ARequestWhoseConnectionWasLostBeforeTheAnswerIsSentAgainAfterTheReconnect) {
  auto& q = impl_.queue(0);
  impl_.server().pause();
  std::promise<boost::system::error_code> result;
  q.submit("chat.workflow.execute.s1", "lost", new_identifier("m"), {},
           [&](boost::system::error_code ec) { result.set_value(ec); });
  // On its way: written to the socket, not read. (The bus thread sends it at
  // once; the wait covers a machine too loaded to run that thread for a while.)
  std::this_thread::sleep_for(1s);
  impl_.server().kill();
  impl_.server().start();
  auto done = result.get_future();
  ASSERT_EQ(done.wait_for(20s), std::future_status::ready);
  EXPECT_FALSE(done.get()) << "the second copy was acknowledged";
  Taker t;
  auto s = impl_.queue(1).consume(slots(10), t.handler());
  ASSERT_TRUE(wait_until([&] { return t.size() == 1; }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(t.payloads(), std::vector<std::string>{"lost"});
  t.take(0)->ack();
}

TEST_F(JetStreamWorkQueue, SubmitFailsFastWhileTheServerIsDown) {
  auto& q = impl_.queue(0);
  impl_.server().stop();
  EXPECT_TRUE(submit(q, "nobody", new_identifier("m")));
}

}  // namespace
}  // namespace chat::test
