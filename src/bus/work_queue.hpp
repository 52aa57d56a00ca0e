#pragma once
// Chat requests on their way from pods to workers. Two implementations:
// BusWorkQueue (a queue group on any MessageBus: the in-process bus, or core
// NATS when NATS_JETSTREAM=false) and JetStreamWorkQueue (a work-queue stream
// and one durable pull consumer shared by the workers).
//
// Contract, for every implementation:
// - submit() never blocks; `done` reports, on a bus thread, when the request is
//   as safe as this queue makes it: stored by the server (JetStream), or handed
//   to the connection (core NATS, in-process). A request submitted twice with
//   the same id is delivered once when the queue deduplicates (JetStream).
// - Each request goes to one worker at a time. A request that is neither acked
//   nor given back is delivered again after the worker is presumed dead
//   (JetStream: AckWait), as a new attempt, until its deliveries run out.
// - The handler runs on a queue-owned thread and must not block.
// - withdraw() removes a request not yet acked where the queue keeps requests
//   (JetStream); a queue group keeps none: there it does nothing.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "bus/message_bus.hpp"

namespace chat::bus {

// One delivery of one request.
class WorkItem {
 public:
  virtual ~WorkItem() = default;
  virtual std::string_view payload() const = 0;
  // The subject the request was submitted on (chat.workflow.execute.{session}).
  virtual std::string_view subject() const = 0;
  // A header the request was submitted with; empty when absent.
  virtual std::string header(std::string_view key) const = 0;
  // 1 for the first delivery; higher after a worker died or gave it back.
  virtual unsigned attempt() const = 0;
  // Nothing is delivered again if this delivery is not acked.
  virtual bool final_attempt() const = 0;
  // Still being worked on: not to be delivered again yet.
  virtual void in_progress() = 0;
  // Done with: never delivered again.
  virtual void ack() = 0;
  // Not started: another worker may take it now.
  virtual void give_back() = 0;
};

using WorkHandler = std::function<void(std::unique_ptr<WorkItem>)>;
// How many more requests the worker can take now; pull-based queues fetch no more.
using FreeSlots = std::function<std::size_t()>;

class WorkQueue {
 public:
  virtual ~WorkQueue() = default;

  // `id` names the request (its message_id) for deduplication; `headers` go
  // with it to the worker (the trace context).
  virtual void submit(std::string subject, std::string payload, std::string id, Headers headers,
                      PublishCallback done) = 0;
  // The request `id`, submitted on `subject`, is no longer wanted (its reply
  // ended before any chunk of it came, or its submit failed without knowing
  // whether the server stored it): a queue that still holds it drops it, so
  // that no worker runs it later. Best effort and never blocks; asked while
  // the server is away, it is done once the server is back. One that a
  // worker holds unacked goes too (JetStream takes that as its ack): that
  // worker was sent the cancel.
  virtual void withdraw(const std::string& subject, const std::string& id) = 0;
  // Starts delivering requests to `handler`; destroying the subscription stops it.
  virtual std::unique_ptr<Subscription> consume(FreeSlots free_slots, WorkHandler handler) = 0;
  virtual ComponentStatus status() const = 0;
};

}  // namespace chat::bus
