#pragma once
// The session registry of the embedded default: one process, so a connection is
// live exactly while it is registered (no heartbeats needed).

#include <boost/asio/any_io_executor.hpp>

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

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
    std::string pod_id;
    std::string connection_id;
    bool operator==(const Entry&) const = default;
  };
  std::mutex mutex_;  // guards sessions_
  // Session id -> its connections, in the order they came. A session has a
  // stream or two: a short vector costs an idle stream far less than a set.
  std::unordered_map<std::string, std::vector<Entry>> sessions_;
};

}  // namespace chat::registry
