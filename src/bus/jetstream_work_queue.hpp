#pragma once
// The work queue on JetStream: a work-queue stream over
// chat.workflow.execute.> and one durable pull consumer that every worker
// shares (explicit ack, AckWait, MaxDeliver, MaxAckPending). A request is
// stored before the pod answers 202, waits while no worker runs, and is
// delivered again as a new attempt when a worker dies with it.
//
// nats.c 3.4.1 has no asynchronous pull, so each consume() runs its fetch loop
// on a thread of its own, asking for no more requests than the worker has free
// slots. Its Fetch can return a timeout at once instead of after the wait
// (nats.c issue #631); the loop then pauses, so it never spins.

#include <memory>

#include "bus/jetstream.hpp"
#include "bus/work_queue.hpp"

namespace chat::bus {

class JetStreamWorkQueue final : public WorkQueue {
 public:
  explicit JetStreamWorkQueue(JetStream& js) : js_(js) {}

  void submit(std::string subject, std::string payload, std::string id, Headers headers, PublishCallback done) override;
  // Looks through the session's queued requests, oldest first, and deletes
  // the one that is `id`.
  void withdraw(const std::string& subject, const std::string& id) override;
  std::unique_ptr<Subscription> consume(FreeSlots free_slots, WorkHandler handler) override;
  ComponentStatus status() const override;

 private:
  JetStream& js_;
};

}  // namespace chat::bus
