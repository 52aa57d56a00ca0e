// The MessageBus contract (bus/message_bus.hpp), run against every
// implementation: MemoryBus in-process, NatsBus against a real nats-server.
// ctest runs the Memory half as a unit test and the Nats half under label `nats`.

#include <gtest/gtest.h>

#include <algorithm>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <set>
#include <thread>

#include "bus/bus_test_support.hpp"
#include "bus/memory_bus.hpp"
#include "bus/nats_bus.hpp"
#include "harness/server_process.hpp"

namespace chat::test {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;

// One bus shared by every "client": in-process, there is nothing to connect.
class MemoryImpl {
 public:
  static constexpr const char* kName = "Memory";

  MemoryImpl() : work_(asio::make_work_guard(io_)), bus_(io_.get_executor()) {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~MemoryImpl() {
    work_.reset();
    for (auto& t : threads_) t.join();
  }
  bus::MessageBus& bus(int) { return bus_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  bus::MemoryBus bus_;
  std::vector<std::thread> threads_;
};

// One nats-server per test; each client index is its own connection.
class NatsImpl {
 public:
  static constexpr const char* kName = "Nats";

  bus::MessageBus& bus(int index) {
    while (buses_.size() <= static_cast<std::size_t>(index)) {
      config::NatsConfig config;
      config.url = server_.nats_url();
      config.reconnect_wait = 100ms;
      auto& b = buses_.emplace_back(std::make_unique<bus::NatsBus>(config, "conformance-" + std::to_string(index)));
      EXPECT_TRUE(eventually([&] { return b->connected(); }));
    }
    return *buses_[static_cast<std::size_t>(index)];
  }

 private:
  ServerProcess server_{ServerProcess::Kind::nats};
  std::vector<std::unique_ptr<bus::NatsBus>> buses_;
};

template <class Impl>
class BusConformance : public ::testing::Test {
 protected:
  bus::MessageBus& publisher() { return impl_.bus(0); }
  bus::MessageBus& subscriber() { return impl_.bus(1); }
  // A unique first token keeps tests apart even on a shared server.
  std::string subject(std::string_view rest) { return prefix_ + "." + std::string(rest); }

  Impl impl_;
  std::string prefix_ = new_identifier("conf");
};

struct ImplName {
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

using Implementations = ::testing::Types<MemoryImpl, NatsImpl>;
TYPED_TEST_SUITE(BusConformance, Implementations, ImplName);

TYPED_TEST(BusConformance, PublishReachesSubscriber) {
  Collector got;
  auto sub = this->subscriber().subscribe(this->subject("a"), {}, got.handler());
  ASSERT_TRUE(sync(this->subscriber()));

  EXPECT_FALSE(publish_and_wait(this->publisher(), this->subject("a"), R"({"x":1})"));

  ASSERT_TRUE(got.wait_for(1));
  auto items = got.items();
  EXPECT_EQ(items[0].subject, this->subject("a"));
  EXPECT_EQ(items[0].payload, R"({"x":1})");
  EXPECT_EQ(items[0].reply_to, "");
  EXPECT_TRUE(this->publisher().connected());
}

TYPED_TEST(BusConformance, HeadersArriveWithTheMessage) {
  Collector got;
  auto sub = this->subscriber().subscribe(this->subject("h"), {}, got.handler());
  ASSERT_TRUE(sync(this->subscriber()));
  this->publisher().publish(this->subject("h"), "with", bus::Headers{{"traceparent", "00-ab-cd-01"}, {"k", "v"}}, {});
  this->publisher().publish(this->subject("h"), "without");
  ASSERT_TRUE(got.wait_for(2));
  auto items = got.items();
  EXPECT_EQ(items[0].payload, "with");
  auto headers = items[0].headers;
  std::sort(headers.begin(), headers.end());  // NATS keeps no header order
  EXPECT_EQ(headers, (bus::Headers{{"k", "v"}, {"traceparent", "00-ab-cd-01"}}));
  EXPECT_TRUE(items[1].headers.empty());
}

TYPED_TEST(BusConformance, StarMatchesExactlyOneToken) {
  Collector got;
  auto sub = this->subscriber().subscribe(this->subject("pod.*.response"), {}, got.handler());
  ASSERT_TRUE(sync(this->subscriber()));

  for (auto rest : {"pod.p1.response", "pod.p1.health", "pod.p1.x.response", "pod.response", "pod.p2.response"})
    this->publisher().publish(this->subject(rest), rest);

  // Per-publisher order: once the last matching one is in, a wrongly matched
  // earlier one would be in too.
  ASSERT_TRUE(got.wait_for(2));
  std::this_thread::sleep_for(50ms);
  auto items = got.items();
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].payload, "pod.p1.response");
  EXPECT_EQ(items[1].payload, "pod.p2.response");
}

TYPED_TEST(BusConformance, QueueGroupDeliversEachMessageToExactlyOneMember) {
  Collector member_a, member_b, everyone;
  auto a = this->subscriber().subscribe(this->subject("work"), "workers", member_a.handler());
  auto b = this->impl_.bus(2).subscribe(this->subject("work"), "workers", member_b.handler());
  auto plain = this->subscriber().subscribe(this->subject("work"), {}, everyone.handler());
  ASSERT_TRUE(sync(this->subscriber()));
  ASSERT_TRUE(sync(this->impl_.bus(2)));

  constexpr int kCount = 200;
  for (int i = 0; i < kCount; ++i) this->publisher().publish(this->subject("work"), std::to_string(i));

  ASSERT_TRUE(everyone.wait_for(kCount));
  ASSERT_TRUE(eventually([&] { return member_a.size() + member_b.size() >= kCount; }));
  std::this_thread::sleep_for(50ms);
  std::multiset<std::string> seen;
  for (auto* member : {&member_a, &member_b})
    for (const auto& m : member->items()) seen.insert(m.payload);
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kCount));
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(seen.count(std::to_string(i)), 1u) << i;
  EXPECT_GT(member_a.size(), 0u);
  EXPECT_GT(member_b.size(), 0u);
}

TYPED_TEST(BusConformance, OnePublisherKeepsItsOrder) {
  Collector got;
  auto sub = this->subscriber().subscribe(this->subject("ordered"), {}, got.handler());
  ASSERT_TRUE(sync(this->subscriber()));

  constexpr int kCount = 1000;
  for (int i = 0; i < kCount; ++i) this->publisher().publish(this->subject("ordered"), std::to_string(i));

  ASSERT_TRUE(got.wait_for(kCount));
  auto items = got.items();
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(items[static_cast<std::size_t>(i)].payload, std::to_string(i));
}

TYPED_TEST(BusConformance, DestroyingSubscriptionStopsDelivery) {
  Collector got;
  auto sub = this->subscriber().subscribe(this->subject("stop"), {}, got.handler());
  ASSERT_TRUE(sync(this->subscriber()));
  this->publisher().publish(this->subject("stop"), "before");
  ASSERT_TRUE(got.wait_for(1));

  sub.reset();
  for (int i = 0; i < 20; ++i) this->publisher().publish(this->subject("stop"), "after");
  ASSERT_TRUE(sync(this->publisher()));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(got.size(), 1u);
}

// A queue-group member that leaves by draining first handles what was already
// on its way to it (destroying it would drop that): the group loses nothing,
// and the member gets nothing once drained.
TYPED_TEST(BusConformance, ADrainedQueueMemberHandsOverWhatCameForItAndTheGroupLosesNothing) {
  std::atomic<bool> entered{false}, release{false};
  std::mutex mutex;  // guards member_a, filled on A's delivery thread
  std::vector<std::string> member_a;
  auto a = this->subscriber().subscribe(this->subject("work"), "workers", [&](const bus::Message& m) {
    entered = true;
    while (!release.load()) std::this_thread::sleep_for(1ms);  // what comes next queues behind this
    std::lock_guard lock(mutex);
    member_a.emplace_back(m.payload);
  });
  auto a_size = [&] {
    std::lock_guard lock(mutex);
    return member_a.size();
  };
  Collector member_b, fence;
  auto b = this->impl_.bus(2).subscribe(this->subject("work"), "workers", member_b.handler());
  auto fence_sub = this->subscriber().subscribe(this->subject("fence"), {}, fence.handler());
  ASSERT_TRUE(sync(this->subscriber()));
  ASSERT_TRUE(sync(this->impl_.bus(2)));

  constexpr int kBefore = 200, kAfter = 100;
  for (int i = 0; i < kBefore; ++i) this->publisher().publish(this->subject("work"), std::to_string(i));
  // Sent after them on A's connection: once it is in, A's share is queued there.
  this->publisher().publish(this->subject("fence"), "");
  ASSERT_TRUE(fence.wait_for(1));
  ASSERT_TRUE(eventually([&] { return entered.load(); }));

  std::atomic<int> drained{0};
  a->drain([&] { ++drained; });
  release = true;
  ASSERT_TRUE(eventually([&] { return drained.load() == 1; }));
  const auto a_at_drained = a_size();
  EXPECT_GT(a_at_drained, 1u) << "A held messages queued behind its first";

  for (int i = kBefore; i < kBefore + kAfter; ++i) this->publisher().publish(this->subject("work"), std::to_string(i));
  ASSERT_TRUE(eventually([&] { return a_size() + member_b.size() >= kBefore + kAfter; }))
      << "lost: " << kBefore + kAfter - static_cast<int>(a_size() + member_b.size());
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(a_size(), a_at_drained) << "delivered to A after its drain";
  std::multiset<std::string> seen;
  {
    std::lock_guard lock(mutex);
    seen.insert(member_a.begin(), member_a.end());
  }
  for (const auto& m : member_b.items()) seen.insert(m.payload);
  for (int i = 0; i < kBefore + kAfter; ++i) EXPECT_EQ(seen.count(std::to_string(i)), 1u) << i;
  EXPECT_EQ(drained.load(), 1);
}

TYPED_TEST(BusConformance, DrainingAnIdleSubscriptionEndsIt) {
  Collector got;
  auto sub = this->subscriber().subscribe(this->subject("idle"), {}, got.handler());
  ASSERT_TRUE(sync(this->subscriber()));
  std::atomic<int> drained{0};
  sub->drain([&] { ++drained; });
  ASSERT_TRUE(eventually([&] { return drained.load() == 1; }));
  for (int i = 0; i < 20; ++i) this->publisher().publish(this->subject("idle"), "after");
  ASSERT_TRUE(sync(this->publisher()));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(got.size(), 0u);
  EXPECT_EQ(drained.load(), 1);
}

TYPED_TEST(BusConformance, HandlerIsNotRunningOnceDestructorReturns) {
  std::atomic<bool> in_handler{false};
  std::atomic<int> calls{0};
  auto sub = this->subscriber().subscribe(this->subject("slow"), {}, [&](const bus::Message&) {
    in_handler = true;
    ++calls;
    std::this_thread::sleep_for(100ms);
    in_handler = false;
  });
  ASSERT_TRUE(sync(this->subscriber()));
  for (int i = 0; i < 5; ++i) this->publisher().publish(this->subject("slow"), "x");
  ASSERT_TRUE(eventually([&] { return in_handler.load(); }));

  sub.reset();
  EXPECT_FALSE(in_handler.load());
  int after = calls;
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(calls.load(), after);
}

TYPED_TEST(BusConformance, HandlerMayDropItsOwnSubscription) {
  std::mutex mutex;  // guards sub between the test and the handler
  std::unique_ptr<bus::Subscription> sub;
  std::atomic<int> calls{0};
  {
    std::lock_guard lock(mutex);
    sub = this->subscriber().subscribe(this->subject("once"), {}, [&](const bus::Message&) {
      ++calls;
      std::lock_guard lock(mutex);
      sub.reset();
    });
  }
  ASSERT_TRUE(sync(this->subscriber()));
  for (int i = 0; i < 5; ++i) this->publisher().publish(this->subject("once"), "x");
  ASSERT_TRUE(eventually([&] { return calls.load() >= 1; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(calls.load(), 1);
  std::lock_guard lock(mutex);
  EXPECT_EQ(sub, nullptr) << "the handler dropped it";
}

TYPED_TEST(BusConformance, RequestGetsReply) {
  auto& responder_bus = this->subscriber();
  auto responder = responder_bus.subscribe(this->subject("health"), {}, [&](const bus::Message& m) {
    responder_bus.publish(std::string(m.reply_to), "pong:" + std::string(m.payload));
  });
  ASSERT_TRUE(sync(responder_bus));

  auto reply = request_and_wait(this->publisher(), this->subject("health"), "ping", 5s);
  EXPECT_FALSE(reply.ec) << reply.ec.message();
  EXPECT_EQ(reply.payload, "pong:ping");
}

// A 300 ms request that nobody answers ends with timed_out, not sooner and not
// seconds later.
void expect_timed_out_on_time(bus::MessageBus& bus, const std::string& subject) {
  auto start = std::chrono::steady_clock::now();
  auto reply = request_and_wait(bus, subject, "ping", 300ms);
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(reply.ec, boost::asio::error::timed_out);
  EXPECT_GE(elapsed, 290ms);
  EXPECT_LT(elapsed, 3s);
}

TYPED_TEST(BusConformance, RequestTimesOutWithoutReply) {
  Collector silent;
  auto sub = this->subscriber().subscribe(this->subject("silent"), {}, silent.handler());
  ASSERT_TRUE(sync(this->subscriber()));

  expect_timed_out_on_time(this->publisher(), this->subject("silent"));
  ASSERT_TRUE(silent.wait_for(1));
  EXPECT_FALSE(silent.items()[0].reply_to.empty());
}

// One bus, requests of different timeouts: each ends at its own, a short one
// does not wait for a longer one made before it.
TYPED_TEST(BusConformance, AShortRequestTimesOutOnTimeBehindALongerOne) {
  // Shared: the bus ends the long request (aborted) when it goes, after this body.
  auto long_ended = std::make_shared<std::atomic<bool>>(false);
  this->publisher().request(this->subject("nobody"), "long", 4s,
                            [long_ended](boost::system::error_code, std::string) { *long_ended = true; });
  expect_timed_out_on_time(this->publisher(), this->subject("nobody"));
  EXPECT_FALSE(*long_ended) << "the long one is still waiting";
}

TYPED_TEST(BusConformance, RequestWithNobodyListeningTimesOut) {
  auto reply = request_and_wait(this->publisher(), this->subject("nobody"), "ping", 200ms);
  EXPECT_EQ(reply.ec, boost::asio::error::timed_out);
}

TYPED_TEST(BusConformance, ConcurrentRequestsGetTheirOwnReplies) {
  auto& responder_bus = this->subscriber();
  auto responder = responder_bus.subscribe(this->subject("echo"), {}, [&](const bus::Message& m) {
    responder_bus.publish(std::string(m.reply_to), std::string(m.payload));
  });
  ASSERT_TRUE(sync(responder_bus));

  constexpr int kCount = 50;
  std::vector<std::future<Reply>> replies;
  for (int i = 0; i < kCount; ++i)
    replies.push_back(std::async(std::launch::async, [&, i] {
      return request_and_wait(this->publisher(), this->subject("echo"), std::to_string(i), 5s);
    }));
  for (int i = 0; i < kCount; ++i) {
    auto reply = replies[static_cast<std::size_t>(i)].get();
    EXPECT_FALSE(reply.ec);
    EXPECT_EQ(reply.payload, std::to_string(i));
  }
}

}  // namespace
}  // namespace chat::test
