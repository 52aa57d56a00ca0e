#pragma once
// The session registry of the embedded default: one process, so a connection is
// live exactly while it is registered (no heartbeats needed).

#include <boost/asio/any_io_executor.hpp>
#include <boost/container/small_vector.hpp>

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/short_string.hpp"
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
    ShortString connection_id;
    bool operator==(const Entry&) const = default;
  };
  std::mutex mutex_;  // guards pods_ and sessions_
  PodIds pods_;
  // Session id -> its connections, in the order they came. Most sessions have
  // one stream: it lives in the map's node, with no block of its own, and
  // short strings with no cached hash keep that node in a 96-byte block.
  std::unordered_map<ShortString, boost::container::small_vector<Entry, 1>, StringKeyHash, StringKeyEqual> sessions_;
};

}  // namespace chat::registry
