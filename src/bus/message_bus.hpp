#pragma once
// The message bus between pods and workers (docs/API.md#nats). Two implementations
// sit behind this interface: MemoryBus (one process, the embedded default) and
// NatsBus. Both carry the same subjects and the same JSON payloads.
//
// Delivery contract, for every implementation:
// - A handler runs on a thread owned by the bus, never concurrently with itself
//   for one subscription; it must not block (post real work to your executor).
// - Messages from one publisher to one subscription arrive in publish order;
//   messages from different publishers have no order (hence the reorder buffer).
// - A queue-group subscription shares its subject with the other members of the
//   group: each message goes to exactly one of them.
// - Destroying a Subscription unsubscribes; after the destructor returns its
//   handler is not running and will not run again.
// - Draining a Subscription unsubscribes without dropping what the client
//   already holds for it: see Subscription::drain.

#include <boost/system/error_code.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/component_status.hpp"

namespace chat::bus {

// NATS message headers (the trace context of a request); few, and mostly none.
using Headers = std::vector<std::pair<std::string, std::string>>;

// The value of `key` in `headers`; empty when absent.
inline std::string_view header_value(const Headers& headers, std::string_view key) {
  for (const auto& [k, v] : headers)
    if (k == key) return v;
  return {};
}

struct Message {
  std::string_view subject;
  std::string_view payload;
  std::string_view reply_to;  // empty unless the sender expects a reply
  Headers headers = {};
  // More messages of this subscription are already here, queued behind this
  // one: a handler may gather them until a message comes without it. Set only
  // where a subscription's handler runs for one message at a time (nats.c's
  // delivery thread); the in-process bus never sets it.
  bool more = false;
};

using MessageHandler = std::function<void(const Message&)>;
// Runs on a bus thread once the message is handed over: for core NATS when it is
// written to the connection, for JetStream when the server acknowledged it.
using PublishCallback = std::function<void(boost::system::error_code)>;
using ReplyCallback = std::function<void(boost::system::error_code, std::string reply)>;

class Subscription {
 public:
  virtual ~Subscription() = default;

  // Stops new deliveries, but first hands the handler every message already on
  // its way to this subscription (NATS: all the server sent before it took the
  // unsubscribe; a queue group's other members get the rest), then runs
  // `drained` once, on a bus thread. A queue group that loses a member this way
  // loses none of its messages. Call at most once; destroying the subscription
  // still ends it at once, and `drained` does not run after the destructor.
  virtual void drain(std::function<void()> drained) = 0;
};

class MessageBus {
 public:
  virtual ~MessageBus() = default;

  // Never blocks. `done` (optional) reports whether the bus took the message;
  // while disconnected it fails with boost::asio::error::not_connected.
  virtual void publish(std::string subject, std::string payload, Headers headers, PublishCallback done) = 0;
  void publish(std::string subject, std::string payload, PublishCallback done = {}) {
    publish(std::move(subject), std::move(payload), Headers{}, std::move(done));
  }

  // `queue_group` empty: every subscriber of the subject gets every message.
  virtual std::unique_ptr<Subscription> subscribe(std::string pattern, std::string queue_group,
                                                  MessageHandler handler) = 0;

  // Request-reply (the pod health subject). `done` runs once, with timed_out
  // when no reply came in time.
  virtual void request(std::string subject, std::string payload, std::chrono::milliseconds timeout,
                       ReplyCallback done) = 0;

  virtual ComponentStatus status() const = 0;
  bool connected() const { return status().connected; }
};

}  // namespace chat::bus
