#pragma once
// Limiter for one process (the embedded mode): the buckets and sets live in
// memory, behind one mutex (decisions are a few map operations, taken once per
// request, never per chunk). Entries that no longer limit anything are swept
// as the maps grow, so a flood of distinct keys does not grow them for good.

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "limits/limiter.hpp"

namespace chat::limits {

class MemoryLimiter final : public Limiter {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  explicit MemoryLimiter(Clock clock = [] { return std::chrono::steady_clock::now(); }) : clock_(std::move(clock)) {}

  void take(const std::string& key, Rate rate, VerdictCallback done) override;
  void give_back(const std::string& key, Rate rate) override;
  void hold(const std::string& key, const std::string& member, std::uint32_t max, std::chrono::milliseconds ttl,
            VerdictCallback done) override;
  void release(const std::string& key, const std::string& member) override;
  ComponentStatus status() const override { return {"memory", true, true}; }
  void stop() override {}  // answers on the caller's thread: nothing runs after its callers

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  using Holders = std::unordered_map<std::string, TimePoint>;  // member -> expiry

  Verdict take_locked(const std::string& key, Rate rate, TimePoint now);
  Verdict hold_locked(const std::string& key, const std::string& member, std::uint32_t max,
                      std::chrono::milliseconds ttl, TimePoint now);
  void sweep_locked(TimePoint now);

  Clock clock_;
  std::mutex mutex_;  // guards everything below: requests decide on many threads
  // GCRA: per bucket, the theoretical arrival time of the next token.
  std::unordered_map<std::string, TimePoint> buckets_;
  std::unordered_map<std::string, Holders> sets_;
  std::size_t sweep_at_ = 4096;
};

}  // namespace chat::limits
