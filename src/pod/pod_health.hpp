#pragma once
// What /health (and the pod's health subject on the bus) reports.

#include <boost/json/object.hpp>

#include <chrono>
#include <string>

#include "common/component_status.hpp"
#include "hub/session_hub.hpp"

namespace chat::pod {

struct PodHealth {
  std::string pod_id;
  bool draining = false;
  hub::HubStats hub;
  ComponentStatus bus;
  ComponentStatus work_queue;  // JetStream's streams ready, when on
  ComponentStatus registry;
  ComponentStatus store;
  std::chrono::seconds uptime{0};

  bool dependencies_up() const { return bus.connected && work_queue.connected && registry.connected && store.connected; }
  // Can take chats: bus, work queue and store reachable, not draining (the
  // registry only routes replies; without it chunks go to the broadcast subject).
  bool ready() const { return !draining && bus.connected && work_queue.connected && store.connected; }
};

// The /health body: status healthy | degraded | draining, the counts, each
// dependency, and mode embedded | distributed | mixed.
boost::json::object to_json(const PodHealth& h);

}  // namespace chat::pod
