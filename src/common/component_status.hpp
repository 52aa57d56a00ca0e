#pragma once
// What each implementation of an infrastructure interface (bus, registry,
// store) says about itself, for /health, /ready and start-up logs. Callers
// decide by the flags, never by comparing backend names.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace chat {

struct ComponentStatus {
  std::string_view backend;  // "memory", "nats", "redis", "sqlite", "postgres": for people to read
  bool embedded = false;     // an in-process stand-in: no server behind it
  bool connected = false;    // reachable now (always true when embedded)
  std::uint64_t errors = 0;  // operations that failed since start (publishes, commands, writes)
  std::size_t queued = 0;    // operations waiting for the backend
  std::uint64_t reconnects = 0;  // connections made again after losing the server
  // Buses: times the client reported a subscription too slow (it dropped
  // messages, from then until it caught up).
  std::uint64_t slow_consumer = 0;
  std::uint64_t spilled_bytes = 0;  // stores: finished replies waiting on disk (the spill journal)
};

}  // namespace chat
