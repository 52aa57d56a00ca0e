// The pod's bus side: chunks addressed to this pod or broadcast for its
// sessions go into the hub; finished replies go to the store once; replay
// requests and health answers go out.

#include <algorithm>

#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>

#include "log/log.hpp"
#include "pod/pod.hpp"
#include "protocol/subjects.hpp"

namespace chat::pod {
namespace {

// Chunk-log reads for replays at once; more wait for the next stalled check.
constexpr int kMaxReplayLogReads = 16;
// Reads again of the log for a resume (see catch_up), the first after this wait,
// each next one after twice the last.
constexpr int kResumeReadRetries = 4;
constexpr std::chrono::milliseconds kFirstResumeReadRetry{250};

// Chunks handed to the hub together at most: a long burst still reaches the
// streams while the bus delivers the rest of it.
constexpr std::size_t kMaxChunkBatch = 64;

}  // namespace

void Pod::start() {
  hub_.start();
  direct_ = bus_.subscribe(subjects::pod_response(options_.pod_id), {},
                           [this](const bus::Message& m) { on_chunk(m, false, direct_batch_); });
  broadcast_ = bus_.subscribe(std::string(subjects::kAllBroadcast), {},
                              [this](const bus::Message& m) { on_chunk(m, true, broadcast_batch_); });
  health_ = bus_.subscribe(subjects::pod_health(options_.pod_id), {}, [this](const bus::Message& m) {
    if (!m.reply_to.empty()) bus_.publish(std::string(m.reply_to), boost::json::serialize(to_json(health())));
  });
  cancels_ = bus_.subscribe(std::string(subjects::kAllCancel), {}, [this](const bus::Message& m) { on_cancel(m); });
  deletions_ = bus_.subscribe(std::string(subjects::kAllSessionDeleted), {},
                              [this](const bus::Message& m) { on_session_deleted(m); });
}

void Pod::stop_intake() {
  direct_.reset();
  broadcast_.reset();
  health_.reset();
  cancels_.reset();
  deletions_.reset();
  // What a burst cut short by the unsubscribe left behind.
  if (!direct_batch_.empty()) hub_.on_chunks(std::exchange(direct_batch_, {}), false);
  if (!broadcast_batch_.empty()) hub_.on_chunks(std::exchange(broadcast_batch_, {}), true);
}

// A burst of chunks (the bus has more behind this one) reaches the hub in one
// hand-off per shard when it ends: fewer wake-ups of the pod's threads. A
// burst's end, with nothing queued behind it, is run on this thread by a
// shard that is idle; a burst cut short with more behind it goes to the
// strands, so that the event-loop threads share a long burst's work while
// this thread takes the next messages.
void Pod::on_chunk(const bus::Message& m, bool broadcast, std::vector<protocol::ResponseChunk>& batch) {
  if (auto chunk = accept_chunk(m, broadcast)) batch.push_back(std::move(*chunk));
  if (batch.empty() || (m.more && batch.size() < kMaxChunkBatch)) return;
  using RunOn = hub::SessionHub::RunOn;
  hub_.on_chunks(std::exchange(batch, {}), broadcast, m.more ? RunOn::strand : RunOn::caller_if_idle);
}

std::optional<protocol::ResponseChunk> Pod::accept_chunk(const bus::Message& m, bool broadcast) {
  std::string error;
  auto chunk = protocol::decode_response_chunk(m.payload, error);
  if (!chunk) {
    stats_.chunks_rejected.add();
    log::warn("chunk_rejected", {{"subject", m.subject}, {"error", error}});
    return std::nullopt;
  }
  if (broadcast && m.subject != subjects::broadcast(chunk->session_id)) {
    stats_.chunks_rejected.add();
    log::warn("chunk_rejected", {{"subject", m.subject}, {"error", "session_id does not match the subject"}});
    return std::nullopt;
  }
  if (chunk->chunk_id == 0) {
    if (traces_.enabled()) traces_.first_chunk(chunk->message_id);
    // Its end, cancelled, is final: the worker's own.
    if (!chunk->is_final) cancel_again_if_cancelled_here(*chunk);
  }
  return chunk;
}

// Workers route the session's chunks here from now on (and, without a chunk
// log, send again what they still have); with a log, the pod reads it itself.
void Pod::request_replay(const std::string& session_id, const std::string& message_id) {
  if (bus_.connected())
    bus_.publish(subjects::replay(session_id),
                 protocol::encode(protocol::ReplayRequest{session_id, options_.pod_id, message_id}));
  if (!log_) return;
  if (replay_reads_.fetch_add(1) >= kMaxReplayLogReads) {
    replay_reads_.fetch_sub(1);
    stats_.log_reads_skipped.add();  // the next stalled check asks again
    return;
  }
  log_->read(session_id, message_id,
             gate_.guard([this, session_id](boost::system::error_code ec, std::vector<std::string> payloads) {
               replay_reads_.fetch_sub(1);
               if (!ec) hub_.fill_from_log(session_id, decode_logged(session_id, payloads));
             }));
}

// A worker publishes a chunk live before it appends it to the log, and its
// appends wait out a lost connection: the client may hold a chunk of a reply
// the log has no entry of yet. And a read fails while the log's server is
// away (a NATS node restarting, JetStream electing a leader), for seconds. A
// read without the cursor's reply, or a failed one, is tried again a few times
// (kResumeReadRetries, after 0.25, 0.5, 1 and 2 s) before the client is told
// to reload the history (resume_window_passed, resume_unavailable). The
// in-process log lags by an append at most, and what it misses after a
// restart it never gets: one retry, so a page coming back to a restarted
// chatd reloads its history at once instead of after seconds.
void Pod::catch_up(const std::string& session_id, const std::string& stream_id, const sse::ResumeCursor& cursor,
                   int attempt) {
  if (attempt == 0 && bus_.connected())
    bus_.publish(subjects::replay(session_id), protocol::encode(protocol::ReplayRequest{session_id, options_.pod_id, {}}));
  log_->read(session_id, {}, gate_.guard([this, session_id, stream_id, cursor, attempt,
                                          started = std::chrono::steady_clock::now()](
                                             boost::system::error_code ec, std::vector<std::string> payloads) {
    stats_.resume_log_read.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    std::optional<std::vector<protocol::ResponseChunk>> chunks;
    if (!ec) chunks = decode_logged(session_id, payloads);
    const bool has_cursor = chunks && std::any_of(chunks->begin(), chunks->end(), [&](const auto& c) {
                              return c.message_id == cursor.message_id;
                            });
    const bool read_again = ec ? ec != boost::asio::error::operation_aborted : !has_cursor;
    const int retries = log_->status().embedded ? 1 : kResumeReadRetries;
    if (read_again && attempt < retries) {
      (ec ? stats_.failed_reads_retried : stats_.cursor_reads_retried).add();
      auto timer = std::make_shared<boost::asio::steady_timer>(ioc_, kFirstResumeReadRetry * (1 << attempt));
      timer->async_wait(
          gate_.guard([this, timer, session_id, stream_id, cursor, attempt](boost::system::error_code wait_ec) {
            if (!wait_ec) catch_up(session_id, stream_id, cursor, attempt + 1);
          }));
      return;
    }
    hub_.resume_from_log(session_id, stream_id, cursor, std::move(chunks));
  }));
}

std::vector<protocol::ResponseChunk> Pod::decode_logged(const std::string& session_id,
                                                        const std::vector<std::string>& payloads) {
  std::vector<protocol::ResponseChunk> chunks;
  chunks.reserve(payloads.size());
  std::string error;
  for (const auto& p : payloads) {
    auto c = protocol::decode_response_chunk(p, error);
    if (c && c->session_id != session_id) error = "session_id " + c->session_id + " in the log of session " + session_id;
    if (c && error.empty()) {
      chunks.push_back(std::move(*c));
      continue;
    }
    stats_.chunks_rejected.add();
    log::warn("chunk_rejected", {{"session_id", session_id}, {"error", error}, {"from", "log"}});
  }
  return chunks;
}

// Every pod sees a user's cancel, as every worker does. The workers answer for
// the replies they hold; the pod that accepted a reply no chunk of which came
// yet ends it here, at once: its request may wait in the work queue for long
// (every worker busy, or none up), where no worker would answer. Its request
// then leaves the queue (store_reply); streams of the session on other pods
// never saw a chunk of it (a pod publishes none, API.md §5.4).
void Pod::on_cancel(const bus::Message& m) {
  std::string error;
  auto cancel = protocol::decode_cancel_on(m.subject, m.payload, error);
  if (!cancel) {
    log::warn("cancel_request_rejected", {{"subject", m.subject}, {"error", error}});
    return;
  }
  if (answered_as_before(m.reply_to, *cancel)) return;
  const auto message_id = cancel->message_id;
  const auto user_id = cancel->user_id;
  hub_.cancel_unstarted(
      message_id, user_id,
      [this, cancel = std::move(*cancel), reply_to = std::string(m.reply_to)](buffer::CancelResult result,
                                                                              const std::string& session_id) {
        // Sent again while the first was on its way to the shard, which ended it
        // (this run comes after that one); else its worker answers, or nobody does.
        if (result == buffer::CancelResult::not_held) return (void)answered_as_before(reply_to, cancel);
        const bool owner = result == buffer::CancelResult::cancelled;
        if (owner) {
          {
            std::lock_guard lock(cancelled_mutex_);
            cancelled_here_.remember(cancel.message_id, cancel.user_id, session_id);
          }
          log::info("reply_cancelled_before_start", {{"message_id", cancel.message_id}, {"session_id", session_id}});
        }
        answer_cancel(reply_to, owner, cancel.message_id, session_id);
      });
}

// Another pod deleted a session (Pod::end_session): its streams here end too.
void Pod::on_session_deleted(const bus::Message& m) {
  std::string error;
  auto deleted = protocol::decode_session_deleted_on(m.subject, m.payload, error);
  if (!deleted) {
    log::warn("session_deleted_rejected", {{"subject", m.subject}, {"error", error}});
    return;
  }
  if (deleted->pod_id == options_.pod_id) return;  // ended here before the notice went out
  log::info("session_ended", {{"session_id", deleted->session_id}, {"deleted_on", deleted->pod_id}});
  end_session_here(deleted->session_id, deleted->user_id);
}

std::optional<CancelledReplies::Entry> Pod::cancelled_here(const std::string& message_id) {
  std::lock_guard lock(cancelled_mutex_);
  auto* e = cancelled_here_.find(message_id);
  return e ? std::optional(*e) : std::nullopt;
}

// A cancel sent again after this pod cancelled the reply gets the first answer.
bool Pod::answered_as_before(std::string_view reply_to, const protocol::CancelRequest& cancel) {
  auto earlier = cancelled_here(cancel.message_id);
  if (earlier) answer_cancel(reply_to, earlier->user_id == cancel.user_id, cancel.message_id, earlier->session_id);
  return earlier.has_value();
}

// A worker started a reply this pod cancelled before any worker held it (its
// request could not be withdrawn, and no worker up then heard the cancel): it
// is told again, so that it stops generating what the pods drop.
void Pod::cancel_again_if_cancelled_here(const protocol::ResponseChunk& first) {
  auto cancelled = cancelled_here(first.message_id);
  if (!cancelled) return;
  bus_.publish(subjects::cancel(first.message_id),
               protocol::encode(protocol::CancelRequest{first.message_id, cancelled->session_id, cancelled->user_id}));
  log::info("reply_generation_stopped", {{"message_id", first.message_id}, {"session_id", cancelled->session_id},
                                         {"reason", "cancelled"}});
}

// The answer a worker gives (API.md §5.4); none when nobody waits for one.
void Pod::answer_cancel(std::string_view reply_to, bool owner, const std::string& message_id,
                        const std::string& session_id) {
  if (reply_to.empty()) return;
  bus_.publish(std::string(reply_to), boost::json::serialize(boost::json::object{
                                          {"status", owner ? "cancelling" : "forbidden"},
                                          {"message_id", message_id},
                                          {"session_id", session_id}}));
}

// A reply ended here before its worker ended it (too large, too old, evicted):
// what the worker still generates would be dropped as late, so it is told to
// stop, as a user's cancel would (no answer awaited: nothing waits for it).
void Pod::stop_generation(const buffer::FinishedMessage& m) {
  bus_.publish(subjects::cancel(m.message_id),
               protocol::encode(protocol::CancelRequest{m.message_id, m.session_id, m.asked_by}));
  log::info("reply_generation_stopped", {{"message_id", m.message_id}, {"session_id", m.session_id},
                                         {"reason", m.error_code}});
}

void Pod::store_reply(buffer::FinishedMessage m) {
  if (admission_) admission_->reply_ended(m.message_id);
  // A reply cancelled here by its user (on_cancel) is not: the workers had that cancel too.
  if (!m.asked_by.empty() && !m.final_received && m.status != buffer::MessageStatus::cancelled) stop_generation(m);
  // No worker may ever have taken it: nobody is to run it later.
  if (m.unstarted) work_.withdraw(subjects::execute(m.session_id), m.message_id);
  boost::json::object meta{{"model", m.model},
                           {"finish_reason", m.finish_reason},
                           {"duration_ms", m.duration.count()},
                           {"pod_id", options_.pod_id}};
  if (!m.error_code.empty()) meta["error_code"] = m.error_code;
  if (!m.missing_chunks.empty()) {
    boost::json::array ids;
    for (auto id : m.missing_chunks) ids.push_back(id);
    meta["missing_chunks"] = std::move(ids);
  }
  if (!m.correlation_id.empty()) meta["correlation_id"] = m.correlation_id;
  store::AssistantMessage record{m.message_id,
                                 m.session_id,
                                 std::move(m.content),
                                 m.token_count,
                                 std::string(buffer::to_string(m.status)),
                                 boost::json::serialize(meta),
                                 std::chrono::system_clock::now(),
                                 m.asked_by};
  log::info("reply_finished", {{"message_id", record.message_id}, {"session_id", record.session_id},
                               {"status", record.status}, {"tokens", record.token_count},
                               {"correlation_id", m.correlation_id}});
  stats_.writes_pending.add(1);
  auto status = record.status;
  auto started = std::chrono::steady_clock::now();
  trace::SharedSpan span(traces_.enabled() ? traces_.store_write(m.message_id) : trace::Span{});
  span.set("chat.status", status);
  // Answered on a store thread, which may come after the pod went at shutdown.
  store_.save_assistant_message(std::move(record), gate_.guard([this, id = m.message_id, status, started,
                                                                span](boost::system::error_code ec) {
    span.end(ec && ec != store::Errc::not_found ? ec.message() : std::string());
    stats_.writes_pending.add(-1);
    stats_.store_write.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    if (ec == store::Errc::not_found) {
      log::info("reply_not_stored", {{"message_id", id}, {"reason", "the session was deleted"}});
    } else if (ec) {
      stats_.store_failures.add();
      log::error("reply_store_failed", {{"message_id", id}, {"error", ec.message()}});
    } else {
      stats_.replies_stored.add();
      stats_.stored_by_status.at({status}).add();
    }
  }));
}

}  // namespace chat::pod

namespace chat::pod {

void Pod::collect(metrics::Exposition& out) const {
  auto h = health();
  auto up = [&](const char* dependency, const ComponentStatus& s) {
    out.gauge("chat_dependency_up", "1 while the dependency is reachable (embedded ones always are).",
              s.connected ? 1 : 0, {{"dependency", dependency}, {"backend", std::string(s.backend)}});
  };
  up("bus", h.bus);
  up("work_queue", h.work_queue);
  up("registry", h.registry);
  up("store", h.store);
  out.gauge("chat_draining", "1 after SIGTERM, while the pod drains.", h.draining ? 1 : 0);
  out.counter("chat_bus_publish_failures_total", "Publishes the bus refused (disconnected, bad subject).",
              static_cast<double>(h.bus.errors));
  out.counter("chat_bus_slow_consumer_total",
              "Times the NATS client reported a subscription too slow: it dropped messages until it caught up "
              "(logged as nats_async_error).",
              static_cast<double>(h.bus.slow_consumer));
  out.counter("chat_chat_submits_refused_total", "Chats the work queue did not take (answered 503).",
              static_cast<double>(stats_.submits_refused.value()));
  out.counter("chat_memory_full_refusals_total",
              "Chats refused (503) while the replies in flight filled BUFFER_MAX_BYTES, or replies accepted "
              "here filled the session's shard's BUFFER_MAX_BUFFERS.",
              static_cast<double>(stats_.memory_full_refusals.value()));
  out.gauge("chat_store_queue_depth",
            "Store operations waiting in memory, replies held back while the database is away included.",
            static_cast<double>(h.store.queued));
  out.gauge("chat_store_spilled_bytes", "Finished replies waiting on disk in the spill journal, in bytes.",
            static_cast<double>(h.store.spilled_bytes));
  hub_.collect(out);
  out.histogram("chat_chunk_delivery_seconds", "From a chunk's timestamp (worker clock) to its bytes on a stream's socket.",
                stats_.streams.delivery.snapshot());
  for (std::size_t i = 0; i < sse::StreamMetrics::kEndReasons.size(); ++i)
    out.counter("chat_sse_streams_ended_total", "SSE streams that ended, by why (slow_client: cut for not reading).",
                static_cast<double>(stats_.streams.ended[i].value()), {{"reason", sse::StreamMetrics::kEndReasons[i]}});
  out.counter("chat_sse_chunks_coalesced_total",
              "Chunks merged into the chunk event before them for a stream that fell behind.",
              static_cast<double>(stats_.streams.coalesced.value()));
  out.counter("chat_replay_log_reads_skipped_total",
              "Replays asked of the workers without reading the chunk log: as many reads were running as allowed.",
              static_cast<double>(stats_.log_reads_skipped.value()));
  const char* retried =
      "Resume reads of the chunk log made again a moment later, by why: the log had no entry of the cursor's "
      "reply yet (the live path ahead of the log), or the read failed.";
  out.counter("chat_resume_log_reads_retried_total", retried, static_cast<double>(stats_.cursor_reads_retried.value()),
              {{"reason", "cursor_not_logged"}});
  out.counter("chat_resume_log_reads_retried_total", retried, static_cast<double>(stats_.failed_reads_retried.value()),
              {{"reason", "read_failed"}});
  out.counter("chat_chunks_rejected_total", "Chunks from the bus or the log that did not decode.",
              static_cast<double>(stats_.chunks_rejected.value()));
  out.counter("chat_replies_stored_total",
              "Finished replies the store took: written, found written, or held back (memory, spill journal) "
              "while the database is away.",
              static_cast<double>(stats_.replies_stored.value()));
  stats_.stored_by_status.each([&](const metrics::Labels& labels, const metrics::Counter& c) {
    out.counter("chat_replies_stored_by_status_total", "Finished replies stored, by status.",
                static_cast<double>(c.value()), labels);
  });
  out.counter("chat_reply_store_failures_total", "Finished replies the store could not write.",
              static_cast<double>(stats_.store_failures.value()));
  out.gauge("chat_reply_store_pending", "Finished replies waiting for their store write.",
            static_cast<double>(stats_.writes_pending.value()));
  out.histogram("chat_reply_store_seconds", "A finished reply's store write, its queue wait included.",
                stats_.store_write.snapshot());
  out.histogram("chat_resume_log_read_seconds",
                "One chunk-log read for a resuming stream, failed or not, its wait behind other reads included.",
                stats_.resume_log_read.snapshot());
}

}  // namespace chat::pod
