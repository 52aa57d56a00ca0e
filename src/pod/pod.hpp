#pragma once
// The pod's runtime, and the single door to it: the HTTP layer hands it
// validated requests (submit a chat, cancel a reply, open a stream, end a
// deleted session) and asks it for health; the bus hands it chunks. Behind the
// door it keeps the session hub, registers streams in the session registry,
// publishes requests and cancels on the bus, and stores finished replies.
//
// Data flows one way: HTTP → Pod → bus/store/registry, and bus → Pod → hub →
// streams. Every method may be called from any thread and never blocks; the
// callbacks run on bus or store threads.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "bus/chunk_log.hpp"
#include "bus/message_bus.hpp"
#include "bus/work_queue.hpp"
#include "common/callback_gate.hpp"
#include "common/cancelled_replies.hpp"
#include "hub/session_hub.hpp"
#include "limits/admission.hpp"
#include "metrics/metrics.hpp"
#include "pod/chats_in_flight.hpp"
#include "pod/pod_errors.hpp"
#include "pod/pod_health.hpp"
#include "registry/session_registry.hpp"
#include "sse/sse_connection.hpp"
#include "store/message_store.hpp"
#include "pod/reply_traces.hpp"

namespace chat::pod {

struct PodOptions {
  std::string pod_id;
  hub::HubOptions hub;
  sse::QueueLimits stream_limits;
  std::chrono::milliseconds stream_retry{3'000};  // the SSE retry hint
  std::string default_provider = "demo";
  unsigned history_turns = 20;
  std::chrono::milliseconds cancel_timeout{2'000};
  std::chrono::milliseconds shutdown_timeout{15'000};
  // Draining with other pods behind the load balancer: streams are told to
  // come back at once (a retry spread over this window) and continue there
  // from their cursor. Without (one pod): they stay until the replies end.
  bool hand_off_streams = false;
  std::chrono::milliseconds hand_off_spread{2'000};
  // The replies are generated in this process (the in-process bus and
  // worker): one still running at the end of shutdown_timeout dies with the
  // pod, so its streams see it end and the store gets what it has, incomplete
  // ("shutdown"). Not with a shared bus: a worker elsewhere may still finish
  // it, and the store keeps the first row written.
  bool replies_end_with_pod = false;
  trace::Tracer tracer{};  // off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
};

// A chat message as the HTTP layer validated it.
struct ChatRequest {
  std::string session_id;
  std::string user_id;
  std::string message;
  std::string ai_provider;  // empty: the default provider
  std::string model;        // empty: the provider's default model
  std::optional<double> temperature;
  std::optional<std::int64_t> max_tokens;
  std::string system_prompt;
  trace::SpanContext trace{};  // the HTTP request's span: the reply's spans join its trace
};

// The reply that will stream for an accepted chat.
struct Accepted {
  std::string message_id;
  std::string session_id;
  std::string timestamp;
  std::string correlation_id;
};

struct StreamRequest {
  std::string session_id;
  std::optional<sse::ResumeCursor> cursor;
  std::string cors_origin;  // for the stream's response head
  std::string correlation_id;
  std::shared_ptr<void> ticket{};  // held while the stream is open (streams per user and per address)
  // Made right before the user's right to the session is checked: a DELETE of
  // the session after this ends the stream when it attaches.
  std::chrono::steady_clock::time_point owner_checked_at = std::chrono::steady_clock::now();
};

// Counted on bus and store threads; read by anyone.
struct PodStats {
  metrics::Counter chunks_rejected;  // invalid payloads from the bus or the log
  metrics::Counter replies_stored;
  // Stored replies by status: complete, error, cancelled, incomplete.
  metrics::Labelled<metrics::Counter> stored_by_status{{"status"}};
  metrics::Counter store_failures;
  metrics::Gauge writes_pending;
  metrics::Histogram store_write{metrics::kLatencyBuckets};  // a finished reply's save, queue included
  metrics::Counter submits_refused;  // the work queue refused a request (503)
  metrics::Counter memory_full_refusals;  // a chat refused while the reply memory budget was spent (503)
  // Replays asked of the workers without a chunk-log read: as many reads were running as allowed.
  metrics::Counter log_reads_skipped;
  // Resume reads of the log made again a moment later: the first had no trace
  // of the cursor's reply yet, or failed.
  metrics::Counter cursor_reads_retried;
  metrics::Counter failed_reads_retried;
  metrics::Histogram resume_log_read{metrics::kLatencyBuckets};  // one read of a resume, failed or not
  sse::StreamMetrics streams;
};

using SubmitCallback = std::function<void(boost::system::error_code, Accepted)>;
using DoneCallback = std::function<void(boost::system::error_code)>;

class Pod {
 public:
  // `log` may be null (core NATS keeps no chunk log): gaps and resumes are then
  // served by the workers' replay.
  Pod(boost::asio::io_context& ioc, PodOptions options, bus::MessageBus& bus, bus::WorkQueue& work,
      bus::ChunkLog* log, registry::SessionRegistry& registry, store::MessageStore& store,
      limits::Admission* admission = nullptr);
  ~Pod();

  // Subscribes to the pod's bus subjects and starts the hub.
  void start();

  // Stores the user message, expects the reply here and puts the request on
  // the bus; if the bus refuses it, the user message is taken back. With
  // `admission`, the user's running replies are capped first. Errors:
  // Errc::draining, Errc::bus_unavailable, Errc::too_many_replies, or the store's.
  void submit(ChatRequest request, std::string correlation_id, SubmitCallback done);
  // Asks the worker running the reply to stop. Errors: Errc::no_running_reply,
  // Errc::not_owner, Errc::bus_unavailable.
  void cancel(std::string message_id, std::string session_id, std::string user_id, DoneCallback done);
  // Takes the socket over as the session's event stream (the caller checked
  // that the user may read the session). False when the pod has begun to
  // drain: it answered 503 on the socket and closed it.
  bool open_stream(boost::asio::ip::tcp::socket socket, StreamRequest request);
  // The session was deleted: its streams end and its running replies stop,
  // here and, told over the bus, on every other pod.
  void end_session(const std::string& session_id, const std::string& user_id);

  PodHealth health() const;
  bool draining() const { return draining_.load(); }
  // The pod's metrics: streams, hub, store writes, dependencies (any thread).
  void collect(metrics::Exposition& out) const;
  std::size_t open_streams() const { return hub_.stats().streams; }
  const std::string& id() const { return options_.pod_id; }
  const PodStats& stats() const { return stats_; }

  // SIGTERM: refuses new chats and streams at once; hands the streams off
  // (hand_off_streams); waits, bounded by the shutdown timeout, for the replies
  // that streams or the store wait for; leaves the bus, the registry and the
  // store tidy; closes what streams remain with a retry hint. `done` runs once
  // all of it is over.
  void drain(std::function<void()> done);

 private:
  void stop_intake();
  void on_chunk(const bus::Message& m, bool broadcast, std::vector<protocol::ResponseChunk>& batch);
  std::optional<protocol::ResponseChunk> accept_chunk(const bus::Message& m, bool broadcast);
  void on_cancel(const bus::Message& m);
  void on_session_deleted(const bus::Message& m);
  void end_session_here(const std::string& session_id, const std::string& user_id);
  std::optional<CancelledReplies::Entry> cancelled_here(const std::string& message_id);
  bool answered_as_before(std::string_view reply_to, const protocol::CancelRequest& cancel);
  void cancel_again_if_cancelled_here(const protocol::ResponseChunk& first);
  void answer_cancel(std::string_view reply_to, bool owner, const std::string& message_id,
                     const std::string& session_id);
  void accept(ChatRequest request, std::string correlation_id, std::string reply_id, SubmitCallback done);
  bool no_room_for_reply(const std::string& session_id);
  bool reply_memory_full();
  void publish_request(ChatRequest request, std::string correlation_id, std::string user_message_id,
                       std::string reply_id, std::vector<protocol::HistoryEntry> history, SubmitCallback done);
  void take_back(const std::string& reply_id, const std::string& user_message_id);
  bool expect_unless_ended(const std::string& session_id, const std::string& message_id, const std::string& user_id,
                           std::chrono::steady_clock::time_point asked_at);
  void on_stream_closed(const std::shared_ptr<sse::SseConnection>& stream, std::string_view reason);
  void store_reply(buffer::FinishedMessage m);
  void stop_generation(const buffer::FinishedMessage& m);
  void request_replay(const std::string& session_id, const std::string& message_id);
  void catch_up(const std::string& session_id, const std::string& stream_id, const sse::ResumeCursor& cursor,
                int attempt = 0);
  // The session's log entries that decode and name the session.
  std::vector<protocol::ResponseChunk> decode_logged(const std::string& session_id,
                                                     const std::vector<std::string>& payloads);
  void finish_drain(std::chrono::steady_clock::time_point deadline, std::function<void()> done);
  sse::Frame hand_off_frame() const;

  boost::asio::io_context& ioc_;
  PodOptions options_;
  bus::MessageBus& bus_;
  bus::WorkQueue& work_;
  bus::ChunkLog* log_;
  registry::SessionRegistry& registry_;
  store::MessageStore& store_;
  limits::Admission* admission_;  // null: no admission limits (tests, tools)
  // Whether the last chat found the reply memory budget spent: its changes are logged, not every refusal.
  std::atomic<bool> memory_full_{false};
  hub::SessionHub hub_;
  PodStats stats_;
  // Shared by every stream of this pod (each keeps a reference to it).
  sse::StreamContext stream_context_{
      options_.stream_limits, &stats_.streams,
      [this](const std::shared_ptr<sse::SseConnection>& s, std::string_view reason) { on_stream_closed(s, reason); }};
  ReplyTraces traces_;
  // Chunks gathered while the bus holds more behind them (Message::more), one
  // batch per subscription: touched by its handler only, and by stop_intake
  // once the subscription is gone. Declared first: they outlive the handlers.
  std::vector<protocol::ResponseChunk> direct_batch_;
  std::vector<protocol::ResponseChunk> broadcast_batch_;
  // Replies this pod cancelled before they started (on_cancel), so that a
  // cancel sent again gets the first answer and a worker that starts one late
  // is told again. Guarded by cancelled_mutex_: the bus's threads read it, the
  // shards' runs write it. Declared before the subscriptions, which use it.
  std::mutex cancelled_mutex_;
  CancelledReplies cancelled_here_{std::chrono::minutes{10}, 10'000};
  std::unique_ptr<bus::Subscription> direct_;
  std::unique_ptr<bus::Subscription> broadcast_;
  std::unique_ptr<bus::Subscription> health_;
  std::unique_ptr<bus::Subscription> cancels_;
  std::unique_ptr<bus::Subscription> deletions_;
  std::atomic<bool> draining_{false};
  ChatsInFlight chats_;
  // Sessions ended here lately, by id (the entry's user is the one who ended
  // it): a chat whose store call raced the deletion is refused, not generated
  // for a session that is gone. Guarded by ended_mutex_, held also while the
  // expect or the end is handed to the session's shard.
  std::mutex ended_mutex_;
  CancelledReplies ended_sessions_{std::chrono::minutes{10}, 10'000};
  // Chunk-log reads for replays, running now: each is a consumer on the NATS
  // server, so a backlog of silent replies must not turn into a storm of them.
  std::atomic<int> replay_reads_{0};
  // The store's, the bus's and the log's answers come on their own threads,
  // also while the program is destroying the pod at shutdown: they reach the
  // hub only through this gate, which the destructor closes first.
  CallbackGate gate_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace chat::pod
