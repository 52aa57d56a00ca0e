#pragma once
// The session registry of the embedded default: one process, so a connection is
// live exactly while it is registered (no heartbeats needed).

#include <boost/asio/any_io_executor.hpp>
#include <boost/container/small_vector.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "registry/pod_ids.hpp"
#include "registry/session_registry.hpp"

namespace chat::registry {

class MemoryRegistry final : public SessionRegistry {
 public:
  explicit MemoryRegistry(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

  void add(const ConnectionRef& c) override;
  void remove(const ConnectionRef& c) override;
  void remove_pod(const std::string& pod_id, DoneCallback done) override;
  void live_pods(const std::string& session_id, PodsCallback done) override;
  ComponentStatus status() const override { return {"memory", true, true}; }

 private:
  boost::asio::any_io_executor executor_;

  struct Entry {
    std::uint32_t pod;  // in pods_
    std::string connection_id;
    bool operator==(const Entry&) const = default;
  };
  std::mutex mutex_;  // guards pods_ and sessions_
  PodIds pods_;
  // libstdc++ keeps a copy of each key's hash in its node (8 bytes, which here
  // take the node from malloc's 128-byte size to 112) only for hashes it deems
  // slow, as std::hash<std::string> is and a noexcept wrapper is not. A lookup
  // then rehashes the short keys of the bucket it walks.
  struct UncachedHash {
    std::size_t operator()(const std::string& s) const noexcept { return std::hash<std::string>{}(s); }
  };
  // Session id -> its connections, in the order they came. Most sessions have
  // one stream: it lives in the map's node, with no block of its own.
  std::unordered_map<std::string, boost::container::small_vector<Entry, 1>, UncachedHash> sessions_;
};

}  // namespace chat::registry
