#pragma once
// Pod ids as small numbers. A registry keeps an entry per connection, and all
// of them name this pod (or one of a few): each entry carries a 4-byte index
// instead of its own copy of the id (a Kubernetes pod name does not fit
// std::string's inline buffer, so a copy is 32 bytes plus a heap block).
// Not thread-safe: the owning registry guards it.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace chat::registry {

class PodIds {
 public:
  std::optional<std::uint32_t> find(const std::string& pod_id) const {
    auto it = std::find(ids_.begin(), ids_.end(), pod_id);
    if (it == ids_.end()) return std::nullopt;
    return static_cast<std::uint32_t>(it - ids_.begin());
  }

  // Ids are never forgotten: a process sees its own pod id and a few others.
  std::uint32_t intern(const std::string& pod_id) {
    if (auto known = find(pod_id)) return *known;
    ids_.push_back(pod_id);
    return static_cast<std::uint32_t>(ids_.size() - 1);
  }

  const std::string& name(std::uint32_t index) const { return ids_[index]; }

 private:
  std::vector<std::string> ids_;
};

}  // namespace chat::registry
