#pragma once
// The session registry of the embedded default: one process, so a connection is
// live exactly while it is registered (no heartbeats needed).

#include <boost/asio/any_io_executor.hpp>

#include <map>
#include <mutex>
#include <set>

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
  std::mutex mutex_;  // guards sessions_
  // session id -> {pod id, connection id}
  std::map<std::string, std::set<std::pair<std::string, std::string>>> sessions_;
};

}  // namespace chat::registry
