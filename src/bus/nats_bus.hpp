#pragma once
// MessageBus on NATS through nats.c (distributed mode, NATS_URL set).
//
// Threads:
// - nats.c's own: per connection a reader, a flusher and (while the server is
//   away) a reconnect thread; per subscription one delivery thread, which runs
//   that subscription's handler, one message at a time, in arrival order; and
//   the library's event thread, which runs the connection callbacks below.
//   A handler must not block: it holds up every later message of its
//   subscription. Post real work to your own executor.
// - one thread of our own, running a private io_context ("the bus thread"):
//   publish callbacks, request timers and request completions run there, and
//   unsubscribed subscriptions are freed there a while later (retire()).
//
// Connection: failing to reach the server at start is not fatal. nats.c keeps
// retrying in the background (NatsConfig::max_reconnects, -1 = forever, every
// reconnect_wait) and connected() stays false meanwhile. After a lost
// connection nats.c reconnects the same way and re-sends every subscription,
// so a Subscription survives reconnects. While not connected, publish() and
// request() fail at once with boost::asio::error::not_connected (the caller
// answers 503) instead of queueing into nats.c's reconnect buffer: a message a
// caller was told is "on the bus" must not wait in this process's memory. A
// request already sent when the connection drops ends with
// boost::asio::error::connection_aborted: its message may have arrived.
//
// Requests use one wildcard inbox subscription per bus ("_INBOX.<id>.*", as
// nats.c does internally), not a subscription per request. The server's
// "no responders" notice is turned off, so a request nobody answers times out
// exactly as it does on MemoryBus.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>
#include <vector>

#include "bus/message_bus.hpp"
#include "bus/nats_handles.hpp"
#include "config/config.hpp"

namespace chat::bus {

// NATS_URL: one server, or a cluster's servers separated by commas
// ("nats://a:4222,nats://b:4222"); blanks around each are ignored. Throws
// std::invalid_argument when it names none.
std::vector<std::string> split_server_urls(const std::string& text);

class NatsBus final : public MessageBus {
 public:
  // `name` identifies this client to the server (monitoring) and in logs.
  // Throws on a malformed URL or option; an unreachable server is not an error.
  // May take up to one connect timeout (2 s) for the first attempt.
  NatsBus(const config::NatsConfig& config, std::string name);
  ~NatsBus() override;

  NatsBus(const NatsBus&) = delete;
  NatsBus& operator=(const NatsBus&) = delete;

  using MessageBus::publish;
  void publish(std::string subject, std::string payload, Headers headers, PublishCallback done) override;
  // Throws boost::system::system_error when nats.c refuses the subscription
  // (invalid subject or queue name, closed connection): a programming error.
  std::unique_ptr<Subscription> subscribe(std::string pattern, std::string queue_group,
                                          MessageHandler handler) override;
  void request(std::string subject, std::string payload, std::chrono::milliseconds timeout,
               ReplyCallback done) override;
  ComponentStatus status() const override;

  // A request whose message carries headers (JetStream's Nats-Msg-Id).
  void request(std::string subject, std::string payload, Headers headers, std::chrono::milliseconds timeout,
               ReplyCallback done);

  // For JetStream, which shares this connection (bus/jetstream.hpp).
  natsConnection* native_connection() const { return connection_.get(); }
  // Runs `fn` on the bus thread.
  void defer(std::function<void()> fn);
  // Runs `then(true)` on the bus thread once the connection is up (at once if
  // it is), or `then(false)` when `within` passes first or the bus closes.
  void when_connected(std::chrono::milliseconds within, std::function<void(bool)> then);

  // Frees an unsubscribed subscription a while later. nats.c 3.4.1's reader
  // thread looks a message's subscription up and then uses it without holding a
  // reference, so one freed at once can be pulled from under it (seen: an abort
  // in natsConn_processMsg when a handler dropped its own subscription). The
  // delay outlasts that window by far; a bus that closes frees them after its
  // connection, once nats.c's threads are gone.
  void retire(NatsSubscriptionPtr sub);
  // Shares a subscription that may outlive the bus (a JetStream pull
  // subscription, held by the messages it fetched): the last owner retires
  // it while the bus lives, and frees it at once after the bus closed.
  std::shared_ptr<natsSubscription> share_subscription(natsSubscription* sub);

  struct ConnectionEvents;
  // What a subscription, which may outlive the bus, retires itself through.
  struct Retirement;

 private:
  struct PendingRequest {
    ReplyCallback done;
    std::unique_ptr<boost::asio::steady_timer> timer;
  };

  void connect(const config::NatsConfig& config);
  void start_request(std::uint64_t token, std::string subject, std::string payload, Headers headers,
                     std::chrono::milliseconds timeout, ReplyCallback done);
  void complete_request(std::uint64_t token, boost::system::error_code ec, std::string reply);
  // Ends every request waiting for a reply with `ec`; bus thread only.
  void fail_pending(boost::system::error_code ec);
  void on_inbox_message(const Message& m);
  void complete(PublishCallback done, boost::system::error_code ec);
  void poll_connected(std::chrono::steady_clock::time_point deadline, std::function<void(bool)> then);
  void close_connection();
  void stop_bus_thread();
  void schedule_retirement();

  std::string name_;
  // The bus thread. Declared first so that it outlives everything that posts to it.
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;

  // Closure of nats.c's connection callbacks; see the destructor for its lifetime.
  std::unique_ptr<ConnectionEvents> events_;
  NatsConnectionPtr connection_;

  std::string inbox_prefix_;  // "_INBOX.<random>."
  // Set first by the destructor: a request made after it (a JetStream publish
  // sent again from its own timeout, on the bus thread) ends at once instead
  // of touching the connection being closed.
  std::atomic<bool> closing_{false};
  std::atomic<std::uint64_t> next_token_{0};
  std::atomic<std::uint64_t> publish_failures_{0};
  // Touched only on the bus thread: every request step is posted there.
  std::unordered_map<std::uint64_t, PendingRequest> pending_;
  // Subscriptions waiting to be freed (retire()), oldest first, and when; bus thread only.
  std::deque<std::pair<std::chrono::steady_clock::time_point, NatsSubscriptionPtr>> retired_;
  boost::asio::steady_timer retire_timer_{io_};
  bool retire_stopped_ = false;
  std::shared_ptr<Retirement> retirement_;
  std::unique_ptr<Subscription> inbox_;
};

}  // namespace chat::bus
