#pragma once
// Which pods hold SSE connections for which sessions (docs/API.md#registry). Two
// implementations: MemoryRegistry (one process) and RedisRegistry (the keys of
// docs/API.md#registry, read by workers and by programs in other languages).
//
// Contract, for every implementation:
// - No call blocks its caller: writes are queued, reads complete through a
//   callback that runs on a registry-owned thread (post to your own executor).
// - add/remove of one connection take effect in call order.
// - live_pods returns each pod at most once, only pods with at least one live
//   connection of the session (a member whose heartbeat expired is dead).
// - While the backend is unreachable, writes are kept and replayed once it is
//   back (connections that still exist are re-registered); live_pods fails with
//   an error so the caller can fall back to the broadcast subject.

#include <boost/system/error_code.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/component_status.hpp"

namespace chat::registry {

struct ConnectionRef {
  std::string session_id;
  std::string pod_id;
  std::string connection_id;
};

using PodsCallback = std::function<void(boost::system::error_code, std::vector<std::string> pods)>;
using DoneCallback = std::function<void(boost::system::error_code)>;

class SessionRegistry {
 public:
  virtual ~SessionRegistry() = default;

  virtual void add(const ConnectionRef& c) = 0;
  virtual void remove(const ConnectionRef& c) = 0;
  // Graceful shutdown: drops every entry of this process's pod.
  virtual void remove_pod(const std::string& pod_id, DoneCallback done) = 0;

  virtual void live_pods(const std::string& session_id, PodsCallback done) = 0;

  virtual ComponentStatus status() const = 0;
  bool connected() const { return status().connected; }
};

}  // namespace chat::registry
