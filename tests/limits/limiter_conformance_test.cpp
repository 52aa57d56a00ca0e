// The Limiter contract (limits/limiter.hpp), run against every implementation:
// MemoryLimiter in-process, RedisLimiter against a real redis-server. ctest
// runs the Memory half as a unit test and the Redis half under label `redis`.

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <future>
#include <thread>

#include "common/identifier.hpp"
#include "harness/server_process.hpp"
#include "limits/admission.hpp"
#include "limits/memory_limiter.hpp"
#include "limits/redis_limiter.hpp"

namespace chat::test {
namespace {

using namespace std::chrono_literals;
using limits::Rate;
using limits::Verdict;

class MemoryImpl {
 public:
  static constexpr const char* kName = "Memory";
  limits::Limiter& limiter() { return limiter_; }
  void stop_backend() {}

 private:
  limits::MemoryLimiter limiter_;
};

class RedisImpl {
 public:
  static constexpr const char* kName = "Redis";
  RedisImpl() : limiter_({server_.host(), server_.port(), "", 0, ""}, {}) {
    EXPECT_TRUE(eventually([&] { return limiter_.status().connected; }));
  }
  limits::Limiter& limiter() { return limiter_; }
  void stop_backend() { server_.kill(); }

 private:
  ServerProcess server_{ServerProcess::Kind::redis};
  limits::RedisLimiter limiter_;
};

template <class Impl>
class LimiterConformance : public ::testing::Test {
 protected:
  limits::Limiter& limiter() { return impl_.limiter(); }

  Verdict take(const std::string& key, Rate rate) {
    std::promise<Verdict> p;
    limiter().take(key, rate, [&](Verdict v) { p.set_value(v); });
    return wait(p.get_future());
  }
  Verdict hold(const std::string& key, const std::string& member, std::uint32_t max, std::chrono::milliseconds ttl) {
    std::promise<Verdict> p;
    limiter().hold(key, member, max, ttl, [&](Verdict v) { p.set_value(v); });
    return wait(p.get_future());
  }
  static Verdict wait(std::future<Verdict> f) {
    EXPECT_EQ(f.wait_for(5s), std::future_status::ready) << "a decision must always come";
    return f.get();
  }
  // Keys unique per test: a shared Redis would otherwise carry state over.
  std::string key(const char* what) { return std::string(what) + ":" + prefix_; }

  Impl impl_;
  std::string prefix_ = new_identifier("t");
};

struct ImplName {
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

using Implementations = ::testing::Types<MemoryImpl, RedisImpl>;
TYPED_TEST_SUITE(LimiterConformance, Implementations, ImplName);

TYPED_TEST(LimiterConformance, ABurstPassesThenTheRateApplies) {
  auto k = this->key("burst");
  Rate rate{60, 5};  // one a second, five at once
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(this->take(k, rate).allowed) << "request " << i << " is within the burst";
  auto refused = this->take(k, rate);
  EXPECT_FALSE(refused.allowed);
  EXPECT_FALSE(refused.undecided);
  EXPECT_GT(refused.retry_after, 0ms);
  EXPECT_LE(refused.retry_after, 1000ms) << "one token comes back each second";
}

TYPED_TEST(LimiterConformance, WaitingRetryAfterIsEnough) {
  auto k = this->key("wait");
  Rate rate{600, 1};  // one per 100 ms
  ASSERT_TRUE(this->take(k, rate).allowed);
  auto refused = this->take(k, rate);
  ASSERT_FALSE(refused.allowed);
  std::this_thread::sleep_for(refused.retry_after + 20ms);
  EXPECT_TRUE(this->take(k, rate).allowed);
}

TYPED_TEST(LimiterConformance, KeysAreIndependentAndOffIsUnlimited) {
  Rate rate{60, 1};
  EXPECT_TRUE(this->take(this->key("a"), rate).allowed);
  EXPECT_FALSE(this->take(this->key("a"), rate).allowed);
  EXPECT_TRUE(this->take(this->key("b"), rate).allowed) << "another user's bucket is full";
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(this->take(this->key("a"), Rate{0, 1}).allowed);
}

TYPED_TEST(LimiterConformance, ATokenGivenBackPassesTheNextRequestButNeverOverfills) {
  auto k = this->key("refund");
  Rate rate{1, 2};  // one a minute, two at once: nothing comes back during the test
  ASSERT_TRUE(this->take(k, rate).allowed);
  ASSERT_TRUE(this->take(k, rate).allowed);
  ASSERT_FALSE(this->take(k, rate).allowed);
  this->limiter().give_back(k, rate);
  EXPECT_TRUE(this->take(k, rate).allowed) << "the token given back";
  EXPECT_FALSE(this->take(k, rate).allowed);
  for (int i = 0; i < 5; ++i) this->limiter().give_back(k, rate);
  EXPECT_TRUE(this->take(k, rate).allowed);
  EXPECT_TRUE(this->take(k, rate).allowed);
  EXPECT_FALSE(this->take(k, rate).allowed) << "five given back still make a bucket of two";
  this->limiter().give_back(this->key("never-taken"), rate);
  EXPECT_TRUE(this->take(this->key("never-taken"), rate).allowed);
}

TYPED_TEST(LimiterConformance, AHoldIsBoundedAndReleased) {
  auto k = this->key("running");
  EXPECT_TRUE(this->hold(k, "m1", 2, 60s).allowed);
  EXPECT_TRUE(this->hold(k, "m2", 2, 60s).allowed);
  EXPECT_TRUE(this->hold(k, "m1", 2, 60s).allowed) << "a member already in is let in again";
  auto refused = this->hold(k, "m3", 2, 60s);
  EXPECT_FALSE(refused.allowed);
  EXPECT_GT(refused.retry_after, 0ms);
  this->limiter().release(k, "m1");
  EXPECT_TRUE(eventually([&] { return this->hold(k, "m3", 2, 60s).allowed; }, 2s));
  EXPECT_FALSE(this->hold(k, "m4", 2, 60s).allowed);
}

TYPED_TEST(LimiterConformance, AHolderThatNeverReleasesLeavesAfterItsTtl) {
  auto k = this->key("ttl");
  EXPECT_TRUE(this->hold(k, "gone", 1, 200ms).allowed);
  EXPECT_FALSE(this->hold(k, "next", 1, 200ms).allowed);
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(this->hold(k, "next", 1, 200ms).allowed);
}

TEST(RedisLimiter, UnreachableRedisLetsRequestsThroughUndecided) {
  RedisImpl impl;
  impl.stop_backend();
  auto& limiter = impl.limiter();
  for (int i = 0; i < 5; ++i) {
    std::promise<Verdict> p;
    limiter.take("chat:down", Rate{60, 1}, [&](Verdict v) { p.set_value(v); });
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "no decision may hang";
    auto v = f.get();
    EXPECT_TRUE(v.allowed);
    EXPECT_TRUE(v.undecided);
  }
  EXPECT_GE(limiter.status().errors, 5u);
}

TEST(RedisLimiter, PodsSharingRedisShareTheBucket) {
  ServerProcess server{ServerProcess::Kind::redis};
  limits::RedisLimiter a({server.host(), server.port(), "", 0, ""}, {});
  limits::RedisLimiter b({server.host(), server.port(), "", 0, ""}, {});
  ASSERT_TRUE(eventually([&] { return a.status().connected && b.status().connected; }));
  auto take = [](limits::Limiter& l) {
    std::promise<Verdict> p;
    l.take("chat:shared", Rate{60, 4}, [&](Verdict v) { p.set_value(v); });
    return p.get_future().get().allowed;
  };
  int allowed = 0;
  for (int i = 0; i < 10; ++i) allowed += take(i % 2 ? a : b) ? 1 : 0;
  EXPECT_EQ(allowed, 4) << "the burst holds for both pods together";
}

// Redis answers on the limiter's thread; the caller's work (the API's routing,
// parsing, the chat's submit) belongs on the caller's executor, not on that
// one thread for the whole pod.
TEST(RedisLimiter, AdmissionHandsEachVerdictToTheCallersExecutor) {
  ServerProcess server{ServerProcess::Kind::redis};
  limits::RedisLimiter limiter({server.host(), server.port(), "", 0, ""}, {});
  ASSERT_TRUE(eventually([&] { return limiter.status().connected; }));
  limits::Admission admission(limiter, limits::Policy{{60, 2}, {60, 1}, 1, 0, std::chrono::minutes(1)}, {});
  boost::asio::io_context ioc;
  auto work = boost::asio::make_work_guard(ioc);  // run_for waits for the verdicts
  admission.start(ioc.get_executor());
  std::atomic<int> answered{0};
  std::thread::id chat_thread, reply_thread;
  admission.chat("u1", [&](Verdict v) {
    EXPECT_TRUE(v.allowed && !v.undecided);
    chat_thread = std::this_thread::get_id();
    ++answered;
  });
  admission.reply_starts("u1", "m1", [&](Verdict v) {
    EXPECT_TRUE(v.allowed && !v.undecided);
    reply_thread = std::this_thread::get_id();
    ++answered;
  });
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (answered < 2 && std::chrono::steady_clock::now() < deadline) ioc.run_for(10ms);
  ASSERT_EQ(answered, 2);
  EXPECT_EQ(chat_thread, std::this_thread::get_id());
  EXPECT_EQ(reply_thread, std::this_thread::get_id());
  limiter.stop();
}

// A Redis that stops answering but keeps its connection open: decisions fail
// open after the answer timeout, and after a second of silence the limiter
// drops the connection (status shows it) and connects again once Redis is back.
TEST(RedisLimiter, ARedisThatStopsAnsweringIsNoticedAndReconnectedTo) {
  ServerProcess server{ServerProcess::Kind::redis};
  limits::RedisLimiter limiter({server.host(), server.port(), "", 0, ""}, {});
  ASSERT_TRUE(eventually([&] { return limiter.status().connected; }));
  auto take = [&] {
    std::promise<Verdict> p;
    limiter.take("chat:frozen", Rate{600, 1000}, [&](Verdict v) { p.set_value(v); });
    auto f = p.get_future();
    EXPECT_EQ(f.wait_for(5s), std::future_status::ready) << "no decision may hang";
    return f.get();
  };
  server.pause();
  struct Resume {
    ServerProcess& s;
    ~Resume() { s.resume(); }
  } resume_at_exit{server};
  EXPECT_TRUE(take().undecided);
  EXPECT_TRUE(eventually(
      [&] {
        take();
        return !limiter.status().connected;
      },
      5s))
      << "a silent Redis still shows as connected";
  server.resume();
  EXPECT_TRUE(eventually([&] { return limiter.status().connected; }, 15s));
  EXPECT_FALSE(take().undecided);
}

// A release made while the connection is down reaches Redis once it is back:
// the place it frees would otherwise stay taken until its TTL.
TEST(RedisLimiter, AReleaseMadeWhileRedisIsAwayIsSentOnceItIsBack) {
  ServerProcess server{ServerProcess::Kind::redis};
  limits::RedisLimiter limiter({server.host(), server.port(), "", 0, ""}, {});
  ASSERT_TRUE(eventually([&] { return limiter.status().connected; }));
  auto hold = [&](const std::string& member) {
    std::promise<Verdict> p;
    limiter.hold("running:u1", member, 1, std::chrono::minutes(10), [&](Verdict v) { p.set_value(v); });
    return p.get_future().get();
  };
  ASSERT_TRUE(hold("m1").allowed);
  server.pause();
  struct Resume {
    ServerProcess& s;
    ~Resume() { s.resume(); }
  } resume_at_exit{server};
  ASSERT_TRUE(eventually(
      [&] {
        hold("probe");  // undecided; a second of them makes the limiter drop the connection
        return !limiter.status().connected;
      },
      5s));
  limiter.release("running:u1", "m1");
  server.resume();
  ASSERT_TRUE(eventually([&] { return limiter.status().connected; }, 15s));
  auto v = hold("m2");
  EXPECT_FALSE(v.undecided);
  EXPECT_TRUE(v.allowed) << "m1's place was never given back";
}

// What chatd does once its event loop stopped: a decision Redis answers after
// stop() reaches nobody, since the objects its caller captured go next.
TEST(RedisLimiter, NoVerdictArrivesOnceStopReturned) {
  ServerProcess server{ServerProcess::Kind::redis};
  limits::RedisLimiter limiter({server.host(), server.port(), "", 0, ""}, {});
  ASSERT_TRUE(eventually([&] { return limiter.status().connected; }));
  std::atomic<int> answered{0};
  for (int i = 0; i < 100; ++i) limiter.take("chat:stop" + std::to_string(i), Rate{60, 1}, [&](Verdict) { ++answered; });
  limiter.stop();
  const int at_stop = answered.load();
  limiter.take("chat:after", Rate{60, 1}, [&](Verdict) { ++answered; });
  std::this_thread::sleep_for(400ms);  // past the answer timeout
  EXPECT_EQ(answered.load(), at_stop);
  EXPECT_LT(at_stop, 101);
}

}  // namespace
}  // namespace chat::test
