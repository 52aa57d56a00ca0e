#pragma once
// The pod's side of the bus: chunks addressed to this pod or broadcast for its
// sessions go into the session hub; finished replies go to the store once; the
// pod's health subject is answered.

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "bus/message_bus.hpp"
#include "chat/session_hub.hpp"
#include "registry/session_registry.hpp"
#include "store/message_store.hpp"

namespace chat {

struct PodStats {
  std::atomic<std::uint64_t> chunks_rejected{0};  // invalid payloads from the bus
  std::atomic<std::uint64_t> messages_stored{0};
  std::atomic<std::uint64_t> store_failures{0};
  std::atomic<std::size_t> writes_pending{0};
};

class Pod {
 public:
  using HealthProvider = std::function<std::string()>;

  Pod(boost::asio::io_context& ioc, std::string pod_id, HubOptions hub_options, bus::MessageBus& bus,
      registry::SessionRegistry& registry, store::MessageStore& store);

  // `health` renders the /health JSON for request-reply on the health subject.
  void start(HealthProvider health);
  // Stop listening to the bus (shutdown; replies in flight still finish first).
  void stop_intake();

  SessionHub& hub() { return hub_; }
  const std::string& id() const { return pod_id_; }
  const PodStats& stats() const { return stats_; }

 private:
  void on_chunk(const bus::Message& m, bool broadcast);
  void store_finished(buffer::FinishedMessage m);
  void on_detached(const std::shared_ptr<sse::SseConnection>& c, std::string_view reason);
  void request_replay(const std::string& session_id, const std::string& message_id);

  std::string pod_id_;
  bus::MessageBus& bus_;
  registry::SessionRegistry& registry_;
  store::MessageStore& store_;
  PodStats stats_;
  SessionHub hub_;
  std::unique_ptr<bus::Subscription> direct_;
  std::unique_ptr<bus::Subscription> broadcast_;
  std::unique_ptr<bus::Subscription> health_;
};

}  // namespace chat
