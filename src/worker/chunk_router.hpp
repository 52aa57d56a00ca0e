#pragma once
// Where a session's chunks go (docs/API.md#nats, docs/API.md#registry): the response subjects of
// the pods that hold live connections for it, or the session's broadcast subject
// when there are none or the registry is unreachable. Answers are cached for at
// most `ttl` (1 s), so a client that moves to another pod mid-reply gets the rest
// there, and concurrent look-ups of one session share one registry call.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "registry/session_registry.hpp"

namespace chat::worker {

class ChunkRouter {
 public:
  using Subjects = std::vector<std::string>;
  // Shared, so a cache hit per chunk costs no copy.
  using SubjectsPtr = std::shared_ptr<const Subjects>;
  using RouteCallback = std::function<void(SubjectsPtr)>;

  ChunkRouter(registry::SessionRegistry& registry, std::chrono::milliseconds ttl = std::chrono::seconds{1});
  ~ChunkRouter();

  // A fresh cached answer, without waiting.
  SubjectsPtr cached(const std::string& session_id);
  // A new reply starts: its first chunk must not follow a route cached for the
  // previous one (the client may have moved to another pod in between).
  void forget(const std::string& session_id);
  // A pod just got a stream of the session: route there from now on, before the
  // registry shows it (the cached answer may be up to `ttl` old).
  void add_pod(const std::string& session_id, const std::string& pod_id);
  // Looks the session up; `done` runs on a registry thread (or at once on a hit).
  void resolve(const std::string& session_id, RouteCallback done);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace chat::worker
