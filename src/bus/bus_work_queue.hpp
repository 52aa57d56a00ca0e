#pragma once
// The work queue as a queue group on a MessageBus: the in-process bus of the
// embedded default, or core NATS (NATS_JETSTREAM=false). At most once: a
// request the worker dies with is gone; one given back is published again.

#include "bus/work_queue.hpp"

namespace chat::bus {

class BusWorkQueue final : public WorkQueue {
 public:
  explicit BusWorkQueue(MessageBus& bus) : bus_(bus) {}

  void submit(std::string subject, std::string payload, std::string id, Headers headers, PublishCallback done) override;
  // Nothing waits here: a request went to a worker when it was submitted.
  void withdraw(const std::string&, const std::string&) override {}
  std::unique_ptr<Subscription> consume(FreeSlots free_slots, WorkHandler handler) override;
  ComponentStatus status() const override { return bus_.status(); }

 private:
  MessageBus& bus_;
};

}  // namespace chat::bus
