#include "pod/pod_health.hpp"

#include "common/time.hpp"

namespace chat::pod {
namespace {

std::string_view mode(const PodHealth& h) {
  int embedded = h.bus.embedded + h.registry.embedded + h.store.embedded;
  return embedded == 3 ? "embedded" : embedded == 0 ? "distributed" : "mixed";
}

}  // namespace

boost::json::object to_json(const PodHealth& h) {
  boost::json::object o;
  o["status"] = h.draining ? "draining" : h.dependencies_up() ? "healthy" : "degraded";
  o["pod_id"] = h.pod_id;
  o["timestamp"] = unix_now();
  o["active_connections"] = h.hub.streams;
  o["active_sessions"] = h.hub.sessions;
  o["active_buffers"] = h.hub.buffers;
  o["nats_connected"] = !h.bus.embedded && h.bus.connected;
  o["redis_connected"] = !h.registry.embedded && h.registry.connected;
  o["db_connected"] = h.store.connected;
  o["mode"] = mode(h);
  o["components"] = boost::json::object{{"bus", h.bus.backend},           {"bus_connected", h.bus.connected},
                                        {"work_queue", h.work_queue.backend},
                                        {"work_queue_ready", h.work_queue.connected},
                                        {"registry", h.registry.backend}, {"registry_connected", h.registry.connected},
                                        {"store", h.store.backend},       {"store_connected", h.store.connected}};
  o["uptime_seconds"] = h.uptime.count();
  o["version"] = CHAT_VERSION;
  return o;
}

}  // namespace chat::pod
