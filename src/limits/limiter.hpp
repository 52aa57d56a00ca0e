#pragma once
// Admission limits shared by every pod of a deployment: token buckets (chats
// per minute, requests per minute) and bounded sets of holders (replies running
// at once). The memory implementation serves one process; the Redis one makes
// the limits hold across pods, one script and one round trip per decision.
//
// A limiter that cannot decide (Redis unreachable, an error reply) lets the
// request through: limits protect the service, and refusing every chat while
// Redis restarts would be the larger outage. Such decisions are counted.
//
// Callbacks may run inline (memory) or on the limiter's own thread (Redis).

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/component_status.hpp"
#include "metrics/metrics.hpp"

namespace chat::limits {

// A token bucket: `per_minute` tokens a minute, at most `burst` saved up.
// per_minute 0 turns it off.
struct Rate {
  std::uint32_t per_minute = 0;
  std::uint32_t burst = 1;
  bool off() const { return per_minute == 0; }
  // Time for one token to come back (GCRA's emission interval); not when off().
  std::chrono::microseconds interval() const { return std::chrono::microseconds{60'000'000 / per_minute}; }
};

struct Verdict {
  bool allowed = true;
  std::chrono::milliseconds retry_after{0};  // when refused: the wait until one would pass
  bool undecided = false;                    // allowed because the limiter could not decide
};

using VerdictCallback = std::function<void(Verdict)>;

class Limiter {
 public:
  virtual ~Limiter() = default;

  // Takes one token from the bucket `key`.
  virtual void take(const std::string& key, Rate rate, VerdictCallback done) = 0;
  // Puts back a token taken for a request that was then refused for another
  // reason: the bucket counts what it let through, not what was tried. Never
  // fills the bucket beyond full.
  virtual void give_back(const std::string& key, Rate rate) = 0;

  // Lets `member` into the set `key` if fewer than `max` others are in it (a
  // member already in is let in again). A member leaves with release(), or by
  // itself after `ttl`, so a holder that died does not hold a place for good.
  virtual void hold(const std::string& key, const std::string& member, std::uint32_t max,
                    std::chrono::milliseconds ttl, VerdictCallback done) = 0;
  virtual void release(const std::string& key, const std::string& member) = 0;

  virtual ComponentStatus status() const = 0;

  // Ends the limiter's own thread, if it has one: once stop() returns no
  // callback runs, and decisions still waiting are dropped (their callers are
  // about to go). Later calls are dropped too. Idempotent.
  virtual void stop() = 0;
};

// Which limit refused a request (the `limit` label of chat_rate_limited_total).
enum class Limit { chat, ip, running_replies, streams, connections };
inline constexpr std::size_t kLimitCount = 5;
std::string_view limit_name(Limit limit);

// Refusals by limit, and decisions the limiter could not make.
struct LimitMetrics {
  std::array<metrics::Counter, kLimitCount> refused;
  metrics::Counter undecided;

  void count(Limit limit) { refused[static_cast<std::size_t>(limit)].add(); }
  void collect(metrics::Exposition& out) const;
};

}  // namespace chat::limits
