#include "limits/memory_limiter.hpp"

#include <algorithm>

namespace chat::limits {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

namespace {

// Rounds up, so a client that waits Retry-After is let in.
milliseconds ceil_ms(std::chrono::steady_clock::duration d) {
  return std::chrono::ceil<milliseconds>(std::max(d, std::chrono::steady_clock::duration::zero()));
}

}  // namespace

void MemoryLimiter::take(const std::string& key, Rate rate, VerdictCallback done) {
  if (rate.off()) return done({});
  Verdict v;
  {
    std::lock_guard lock(mutex_);
    v = take_locked(key, rate, clock_());
  }
  done(v);
}

// GCRA: each token moves the bucket's arrival time one emission interval on;
// a request passes while that time is at most `burst` intervals ahead of now.
Verdict MemoryLimiter::take_locked(const std::string& key, Rate rate, TimePoint now) {
  const microseconds emission = rate.interval();
  const auto tolerance = emission * std::max<std::uint32_t>(rate.burst, 1);
  auto [it, fresh] = buckets_.try_emplace(key, now);
  auto tat = std::max(it->second, now);
  auto next = tat + emission;
  if (next - tolerance > now) return {false, ceil_ms(next - tolerance - now)};
  it->second = next;
  if (fresh && buckets_.size() >= sweep_at_) sweep_locked(now);
  return {};
}

void MemoryLimiter::give_back(const std::string& key, Rate rate) {
  if (rate.off()) return;
  std::lock_guard lock(mutex_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) return;
  it->second -= rate.interval();
  if (it->second <= clock_()) buckets_.erase(it);  // full again
}

void MemoryLimiter::hold(const std::string& key, const std::string& member, std::uint32_t max,
                         std::chrono::milliseconds ttl, VerdictCallback done) {
  if (max == 0) return done({});
  Verdict v;
  {
    std::lock_guard lock(mutex_);
    v = hold_locked(key, member, max, ttl, clock_());
  }
  done(v);
}

Verdict MemoryLimiter::hold_locked(const std::string& key, const std::string& member, std::uint32_t max,
                                   std::chrono::milliseconds ttl, TimePoint now) {
  auto& holders = sets_[key];
  std::erase_if(holders, [now](const auto& h) { return h.second <= now; });
  if (!holders.contains(member) && holders.size() >= max) {
    auto first_out = std::min_element(holders.begin(), holders.end(),
                                      [](const auto& a, const auto& b) { return a.second < b.second; });
    return {false, ceil_ms(first_out->second - now)};
  }
  holders[member] = now + ttl;
  if (sets_.size() >= sweep_at_) sweep_locked(now);
  return {};
}

void MemoryLimiter::release(const std::string& key, const std::string& member) {
  std::lock_guard lock(mutex_);
  auto it = sets_.find(key);
  if (it == sets_.end()) return;
  it->second.erase(member);
  if (it->second.empty()) sets_.erase(it);
}

// A bucket whose arrival time has passed is full again: the same as no entry.
void MemoryLimiter::sweep_locked(TimePoint now) {
  std::erase_if(buckets_, [now](const auto& b) { return b.second <= now; });
  for (auto& [key, holders] : sets_) std::erase_if(holders, [now](const auto& h) { return h.second <= now; });
  std::erase_if(sets_, [](const auto& s) { return s.second.empty(); });
  sweep_at_ = std::max<std::size_t>(4096, 2 * std::max(buckets_.size(), sets_.size()));
}

}  // namespace chat::limits
