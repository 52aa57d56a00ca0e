#pragma once
// Limiter on Redis, shared by every pod: each decision is one Lua script (one
// round trip, atomic), with Redis's own clock so that pods with skewed clocks
// agree. Keys (docs/API.md#rate-limits):
//   ratelimit:{key}   STRING  a token bucket's next arrival time (µs), PX until it is full again
//   ratelimit:{key}   ZSET    holders, scored by when they leave by themselves (ms)
//
// Threads: like the registry, the limiter owns one io_context and one thread;
// every hiredis call and timer runs on one strand of it. A decision that Redis
// does not answer within `answer_timeout`, or answers with an error, or that
// finds it unreachable, lets the request through (undecided), with one
// warning per outage.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "limits/limiter.hpp"
#include "registry/redis_connection.hpp"

namespace chat::limits {

class RedisLimiter final : public Limiter {
 public:
  struct Timing {
    std::chrono::milliseconds answer_timeout{250};
    // Decisions waiting this long with no answer at all: the connection is
    // dropped and opened again (meanwhile decisions fail open at once).
    std::chrono::milliseconds silence_limit{1'000};
    registry::RedisTiming connection;
  };

  RedisLimiter(registry::RedisEndpoint endpoint, Timing timing);
  ~RedisLimiter() override;
  RedisLimiter(const RedisLimiter&) = delete;
  RedisLimiter& operator=(const RedisLimiter&) = delete;

  void take(const std::string& key, Rate rate, VerdictCallback done) override;
  void give_back(const std::string& key, Rate rate) override;
  void hold(const std::string& key, const std::string& member, std::uint32_t max, std::chrono::milliseconds ttl,
            VerdictCallback done) override;
  void release(const std::string& key, const std::string& member) override;
  void stop() override;
  ComponentStatus status() const override {
    return {"redis", false, connection_.connected(), failures_.load(std::memory_order_relaxed)};
  }

 private:
  void decide(std::vector<std::string> argv, VerdictCallback done);
  void undecided(const char* why, VerdictCallback& done);
  void answered();
  void reconnect_if_silent();
  void send_release(std::string key, std::string member);
  void keep_unsent(std::string key, std::string member);
  void resend_releases();

  Timing timing_;
  boost::asio::io_context io_;
  registry::RedisStrand strand_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  registry::RedisConnection connection_;
  std::atomic<std::uint64_t> failures_{0};
  bool warned_ = false;    // on the strand: one warning per run of failures
  // On the strand: decisions sent and not answered yet, and since when Redis
  // has answered none of them. A Redis that stops answering without closing
  // (a frozen process, a paused VM, a host gone without a reset) is noticed
  // by this, not by TCP, which can take a quarter of an hour or never.
  std::size_t unanswered_ = 0;
  std::chrono::steady_clock::time_point silent_since_{};
  std::uint64_t epoch_ = 0;  // counts the reconnects made for silence: an older command's handler is not counted
  // On the strand: releases Redis did not get (no connection, or it was lost
  // under them), sent again once it is back; a held place would otherwise stay
  // taken until its TTL (ten minutes for a running reply). The oldest go past
  // the bound: their TTL frees them.
  std::deque<std::pair<std::string, std::string>> unsent_releases_;
  bool stopping_ = false;  // on the strand: set by the destructor; waiting callers are dropped, not called
  std::thread thread_;   // last: starts after everything above exists
};

}  // namespace chat::limits
