#pragma once
// JetStream on the NatsBus connection: the two streams and the workers'
// consumer, created or updated at start (idempotently, retried until the
// server has JetStream and answers), looked for every few seconds after and
// made again when they are gone (a server restarted without its storage), and
// publishing with a server acknowledgement. The work queue and the chunk log
// build on it.
//
// Threads: set-up and the blocking JetStream calls of the log reader run on a
// thread of this class ("the JetStream thread"), never on an event loop. A
// publish is a NATS request with a Nats-Msg-Id header, answered by the
// server's acknowledgement, so it completes on the bus thread like any request.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "bus/nats_bus.hpp"

namespace chat::bus {

struct JetStreamOptions {
  int replicas = 1;
  std::chrono::milliseconds work_max_age{24 * 3'600'000};
  std::chrono::milliseconds log_max_age{3'600'000};
  std::int64_t log_max_bytes = 1ll << 30;
  std::chrono::milliseconds ack_wait{30'000};
  int max_deliver = 4;
  int max_ack_pending = 4'000;
  std::chrono::milliseconds publish_timeout{5'000};
};

inline constexpr const char* kWorkStream = "CHAT_WORK";
inline constexpr const char* kLogStream = "CHAT_LOG";
inline constexpr const char* kWorkConsumer = "workflow-workers";

class JetStream {
 public:
  // `workers`: also creates the workers' durable consumer.
  JetStream(NatsBus& bus, JetStreamOptions options, bool workers);
  ~JetStream();
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;

  // The streams (and consumer) exist: requests can be taken.
  bool ready() const { return ready_.load(); }
  // A publish whose acknowledgement never came may have been stored all the
  // same (a server that stalled, a stream electing its leader, a connection
  // lost before the answer). Sent again under the same msg_id (after the
  // reconnect, if the connection was lost), it is stored once either way, and
  // the answer is known.
  enum class Resend { never, once_unacknowledged };
  // Stores a message under `msg_id` (a repeat within the dedupe window is
  // stored once), with `headers` beside it; `done` on the bus thread once the
  // server acknowledged it, or with not_connected / connection_aborted /
  // timed_out / the server's error.
  void publish(const std::string& subject, const std::string& payload, const std::string& msg_id, Headers headers,
               PublishCallback done, Resend resend = Resend::never);
  // Runs a blocking JetStream call off the event loops, in order. The
  // destructor waits for the calls still queued: a long one should check
  // stopping() and give up.
  void run_blocking(std::function<void()> fn);
  // As run_blocking(), with `fn(true)` once the server answers (the bus
  // connected, the streams ready): at once when it does now. Away, the call
  // would wait out its timeouts ahead of the calls queued behind it. At most
  // kMaxCallsWaiting wait; past that, `fn(false)` at once.
  void run_blocking_when_up(std::function<void(bool up)> fn);
  static constexpr std::size_t kMaxCallsWaiting = 10'000;
  bool stopping() const { return stopping_.load(); }

  jsCtx* context() const { return js_; }
  NatsBus& bus() { return bus_; }
  const JetStreamOptions& options() const { return options_; }

 private:
  void set_up();
  void watch();
  bool up() const { return ready_.load() && bus_.connected(); }
  void look_for_server();
  bool state_lost();
  boost::system::error_code ensure_streams();
  boost::system::error_code ensure_consumer();

  NatsBus& bus_;
  JetStreamOptions options_;
  bool workers_;
  jsCtx* js_ = nullptr;
  std::string last_problem_;  // JetStream thread only: logged once, not on every retry
  std::atomic<bool> ready_{false};
  std::atomic<bool> stopping_{false};
  boost::asio::io_context blocking_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> blocking_work_;
  boost::asio::steady_timer retry_timer_;  // the next set-up attempt, or, once ready, the next look
  // Calls waiting for the server (run_blocking_when_up), and the timer that
  // looks for it meanwhile: JetStream thread only.
  std::vector<std::function<void(bool)>> waiting_calls_;
  boost::asio::steady_timer waiting_timer_;
  std::thread blocking_thread_;
};

}  // namespace chat::bus
