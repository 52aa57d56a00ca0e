#pragma once
// Message ids remembered for a while, each with a value: at most `max_count`
// held (ids taken do not count), the oldest forgotten first, and none past the
// age the owner gives (forget_before, which also bounds what taken ids leave
// behind in the order).

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/time.hpp"

namespace chat::buffer {

template <class Value>
class RecentIds {
 public:
  explicit RecentIds(std::size_t max_count) : max_count_(max_count) {}

  // Keeps the first value given for an id.
  void remember(const std::string& id, SteadyTime now, Value value) {
    remember(id, now, std::move(value), [](const std::string&, Value) {});
  }
  // The same, and `gone(id, value)` for each id the bound pushes out.
  template <class Gone>
  void remember(const std::string& id, SteadyTime now, Value value, Gone gone) {
    if (!ids_.try_emplace(id, std::move(value)).second) return;
    order_.emplace_back(now, id);
    while (ids_.size() > max_count_) pop_oldest(gone);
  }
  bool contains(const std::string& id) const { return ids_.contains(id); }
  const Value* find(const std::string& id) const {
    auto it = ids_.find(id);
    return it == ids_.end() ? nullptr : &it->second;
  }
  // Forgets the id and returns its value.
  std::optional<Value> take(const std::string& id) {
    auto it = ids_.find(id);
    if (it == ids_.end()) return std::nullopt;
    auto value = std::move(it->second);
    ids_.erase(it);
    return value;
  }
  // Forgets every id whose value `pred` holds for; returns them.
  template <class Pred>
  std::vector<std::string> take_if(Pred pred) {
    std::vector<std::string> taken;
    for (auto it = ids_.begin(); it != ids_.end();) {
      if (!pred(it->second)) {
        ++it;
        continue;
      }
      taken.push_back(it->first);
      it = ids_.erase(it);
    }
    return taken;
  }
  void forget_before(SteadyTime cutoff) {
    forget_before(cutoff, [](const std::string&, Value) {});
  }
  // The same, and `gone(id, value)` for each id forgotten (not taken before).
  template <class Gone>
  void forget_before(SteadyTime cutoff, Gone gone) {
    while (!order_.empty() && order_.front().first <= cutoff) pop_oldest(gone);
  }

 private:
  // An id taken and remembered again is forgotten with its first place in
  // order_: early, never late, so the bound holds.
  template <class Gone>
  void pop_oldest(Gone& gone) {
    if (auto it = ids_.find(order_.front().second); it != ids_.end()) {
      gone(it->first, std::move(it->second));
      ids_.erase(it);
    }
    order_.pop_front();
  }

  std::unordered_map<std::string, Value> ids_;
  std::deque<std::pair<SteadyTime, std::string>> order_;
  std::size_t max_count_;
};

}  // namespace chat::buffer
