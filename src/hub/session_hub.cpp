#include "hub/session_hub.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>

#include "common/countdown.hpp"
#include "sse/sse_connection.hpp"

namespace asio = boost::asio;

namespace chat::hub {

// A shard with the strand that runs it, the timers that drive it and the lock
// that says who runs it now. The waiters are the shard's state too: touched
// only by whoever holds `owner`.
struct SessionHub::Slot {
  Slot(asio::io_context& ioc, const HubOptions& options, ShardHandlers handlers, Clock clock,
       buffer::ReplySessions& reply_sessions)
      : strand(asio::make_strand(ioc)),
        shard(options, std::move(handlers), std::move(clock), &reply_sessions),
        gap_timer(strand),
        cleanup_timer(strand),
        heartbeat_timer(strand) {}

  asio::strand<asio::io_context::executor_type> strand;
  SessionShard shard;
  asio::steady_timer gap_timer;
  asio::steady_timer cleanup_timer;
  asio::steady_timer heartbeat_timer;
  std::function<void()> settled_waiter;
  std::function<void()> empty_waiter;
  bool stopped = false;

  // The shard's one owner at a time: a run on its strand, or a caller that
  // found the shard idle (run with RunOn::caller_if_idle). A strand run waits
  // for it only while such a caller runs one burst of chunks (microseconds).
  std::mutex owner;
  // Runs posted to the strand and not yet begun: the shard's backlog. Taken
  // off under `owner`, so a caller holding `owner` that reads 0 knows that no
  // run posted before it is still to come. While there is none, its streams
  // write live frames at once; under load they gather them into fewer writes
  // on their own strands.
  std::atomic<std::uint32_t> waiting{0};

  // Runs `fn` on the strand (or right here, see `owner`), then tells a waiter
  // whose condition now holds.
  template <class Fn>
  void run(Fn fn, RunOn where = RunOn::strand) {
    if (where == RunOn::caller_if_idle) {
      std::unique_lock lock(owner, std::try_to_lock);
      if (lock && waiting.load(std::memory_order_relaxed) == 0) return run_owned(fn, true);
    }
    waiting.fetch_add(1, std::memory_order_relaxed);
    asio::post(strand, [this, fn = std::move(fn)]() mutable {
      std::lock_guard lock(owner);
      run_owned(fn, waiting.fetch_sub(1, std::memory_order_relaxed) == 1);
    });
  }

  template <class Fn>
  void run_owned(Fn& fn, bool nothing_waiting) {
    sse::WriteNowScope write_now(nothing_waiting);
    fn(shard);
    notify_waiters();
  }

  void notify_waiters() {
    if (settled_waiter && shard.owed() == 0) std::exchange(settled_waiter, nullptr)();
    if (empty_waiter && shard.gauges().streams.load(std::memory_order_relaxed) == 0)
      std::exchange(empty_waiter, nullptr)();
  }

  template <class Fn>
  void every(asio::steady_timer& timer, std::chrono::milliseconds interval, Fn fn) {
    timer.expires_after(interval);
    timer.async_wait([this, &timer, interval, fn](boost::system::error_code ec) {
      if (ec || stopped) return;
      {
        std::lock_guard lock(owner);
        run_owned(fn, false);
      }
      every(timer, interval, fn);
    });
  }

  void start(const HubOptions& options) {
    auto gap_check = std::clamp(options.buffer.missing_chunk_timeout / 4, std::chrono::milliseconds{10},
                                std::chrono::milliseconds{1000});
    every(gap_timer, gap_check, [](SessionShard& s) { s.check_gaps(); });
    every(cleanup_timer, options.cleanup_interval, [](SessionShard& s) { s.cleanup(); });
    every(heartbeat_timer, options.heartbeat_interval / SessionShard::kHeartbeatSlices,
          [](SessionShard& s) { s.heartbeat(); });
  }

  void stop() {
    stopped = true;
    gap_timer.cancel();
    cleanup_timer.cancel();
    heartbeat_timer.cancel();
  }
};

SessionHub::SessionHub(asio::io_context& ioc, HubOptions options, ShardHandlers handlers, Clock clock)
    : options_(std::move(options)), clock_(std::move(clock)) {
  auto count = std::max<std::size_t>(1, options_.shards);
  slots_.reserve(count);
  for (std::size_t i = 0; i < count; ++i)
    slots_.push_back(std::make_unique<Slot>(ioc, options_, handlers, clock_, reply_sessions_));
}

SessionHub::~SessionHub() = default;

void SessionHub::start() {
  for (auto& s : slots_) asio::post(s->strand, [slot = s.get(), this] { slot->start(options_); });
}

std::size_t SessionHub::slot_index(std::string_view session_id) const {
  return std::hash<std::string_view>{}(session_id) % slots_.size();
}

void SessionHub::attach(std::shared_ptr<sse::EventSink> stream, std::optional<sse::ResumeCursor> cursor,
                        SteadyTime owner_checked_at) {
  // The detach of this stream goes through the same strand; a stream ended
  // so early that its detach ran first is not held (SessionShard::attach).
  slot_for(stream->session_id()).run(
      [stream = std::move(stream), cursor = std::move(cursor), owner_checked_at](SessionShard& s) mutable {
        s.attach(std::move(stream), std::move(cursor), owner_checked_at);
      });
}

void SessionHub::detach(std::shared_ptr<sse::EventSink> stream) {
  slot_for(stream->session_id()).run([stream = std::move(stream)](SessionShard& s) { s.detach(stream); });
}

void SessionHub::on_chunks(std::vector<protocol::ResponseChunk> chunks, bool broadcast, RunOn where) {
  auto run_batch = [&](Slot& slot, std::vector<protocol::ResponseChunk> batch) {
    slot.run(
        [batch = std::move(batch), broadcast](SessionShard& s) mutable {
          for (auto& c : batch) s.on_chunk(std::move(c), broadcast);
        },
        where);
  };
  if (chunks.size() == 1) {
    auto& slot = slot_for(chunks.front().session_id);
    return run_batch(slot, std::move(chunks));
  }
  std::vector<std::vector<protocol::ResponseChunk>> by_slot(slots_.size());
  for (auto& c : chunks) by_slot[slot_index(c.session_id)].push_back(std::move(c));
  for (std::size_t i = 0; i < by_slot.size(); ++i)
    if (!by_slot[i].empty()) run_batch(*slots_[i], std::move(by_slot[i]));
}

void SessionHub::expect(const std::string& session_id, const std::string& message_id, const std::string& asked_by) {
  // Before the request can reach a worker: no chunk of it comes ahead of this.
  reply_sessions_.accept(message_id, session_id, clock_());
  slot_for(session_id).run(
      [session_id, message_id, asked_by](SessionShard& s) { s.expect(session_id, message_id, asked_by); });
}

void SessionHub::fill_from_log(const std::string& session_id, std::vector<protocol::ResponseChunk> chunks) {
  slot_for(session_id).run([chunks = std::move(chunks)](SessionShard& s) mutable { s.fill_from_log(std::move(chunks)); });
}

void SessionHub::resume_from_log(const std::string& session_id, const std::string& stream_id,
                                 const sse::ResumeCursor& cursor,
                                 std::optional<std::vector<protocol::ResponseChunk>> chunks) {
  slot_for(session_id).run([session_id, stream_id, cursor, chunks = std::move(chunks)](SessionShard& s) mutable {
    s.resume_from_log(session_id, stream_id, cursor, std::move(chunks));
  });
}

void SessionHub::forget(const std::string& session_id, const std::string& message_id) {
  slot_for(session_id).run([session_id, message_id](SessionShard& s) { s.forget(session_id, message_id); });
}

void SessionHub::cancel_unstarted(const std::string& message_id, const std::string& user_id,
                                  std::function<void(buffer::CancelResult, const std::string&)> done) {
  auto session_id = reply_sessions_.session_of(message_id);
  if (!session_id) return done(buffer::CancelResult::not_held, {});
  slot_for(*session_id).run([message_id, user_id, session_id = *session_id, done = std::move(done)](SessionShard& s) {
    done(s.cancel_unstarted(message_id, user_id), session_id);
  });
}

void SessionHub::end_session(const std::string& session_id, std::function<void(std::vector<std::string>)> on_dropped) {
  slot_for(session_id).run([session_id, on_dropped = std::move(on_dropped)](SessionShard& s) {
    auto dropped = s.end_session(session_id);
    if (on_dropped) on_dropped(std::move(dropped));
  });
}

void SessionHub::when_settled(std::function<void()> done) {
  auto arrive = make_countdown(slots_.size(), std::move(done));
  for (auto& s : slots_)
    s->run([slot = s.get(), arrive](SessionShard&) { slot->settled_waiter = arrive; });
}

void SessionHub::finish_accepted(const char* reason, std::function<void(std::size_t)> done) {
  auto finished = std::make_shared<std::atomic<std::size_t>>(0);
  auto arrive = make_countdown(slots_.size(), [finished, done = std::move(done)] { done(finished->load()); });
  for (auto& s : slots_)
    s->run([reason, finished, arrive](SessionShard& shard) {
      finished->fetch_add(shard.finish_accepted(reason));
      arrive();
    });
}

void SessionHub::close_all(std::function<sse::Frame()> last, std::function<void()> done) {
  auto arrive = make_countdown(slots_.size(), std::move(done));
  for (auto& s : slots_)
    s->run([slot = s.get(), last, arrive](SessionShard& shard) {
      shard.close_all(last);
      slot->empty_waiter = arrive;
    });
}

void SessionHub::stop() {
  for (auto& s : slots_) asio::post(s->strand, [slot = s.get()] { slot->stop(); });
}

void SessionHub::collect(metrics::Exposition& out) const {
  auto stats = this->stats();
  out.gauge("chat_sse_connections", "Open SSE streams.", static_cast<double>(stats.streams));
  out.gauge("chat_sse_sessions", "Sessions with at least one open SSE stream.", static_cast<double>(stats.sessions));
  out.gauge("chat_buffers_active", "Replies being reordered (chunk buffers).", static_cast<double>(stats.buffers));
  out.gauge("chat_reply_memory_bytes",
            "Reply text in the buffers and frames kept for late streams, counted against BUFFER_MAX_BYTES.",
            static_cast<double>(stats.reply_bytes));
  auto sum = [this](auto field) {
    std::uint64_t n = 0;
    for (const auto& s : slots_) n += field(s->shard).value();
    return static_cast<double>(n);
  };
  auto counter = [&](const char* name, const char* help, auto field, metrics::Labels labels = {}) {
    out.counter(name, help, sum(field), labels);
  };
  using S = const SessionShard&;
  counter("chat_chunks_received_total", "Chunks that reached a reorder buffer.",
          [](S s) -> const metrics::Counter& { return s.counters().chunks_received; });
  counter("chat_chunks_released_total", "Chunks released in order to the streams.",
          [](S s) -> const metrics::Counter& { return s.counters().chunks_released; });
  counter("chat_chunks_reordered_total", "Chunks that arrived ahead of their turn and were held.",
          [](S s) -> const metrics::Counter& { return s.counters().chunks_reordered; });
  counter("chat_chunks_duplicate_total", "Chunks dropped as duplicates (the first copy wins).",
          [](S s) -> const metrics::Counter& { return s.counters().duplicates_dropped; });
  const char* dropped = "Chunks dropped, by why.";
  counter("chat_chunks_dropped_total", dropped, [](S s) -> const metrics::Counter& { return s.counters().late_dropped; },
          {{"reason", "after_final"}});
  counter("chat_chunks_dropped_total", dropped,
          [](S s) -> const metrics::Counter& { return s.counters().over_limit_dropped; }, {{"reason", "over_limit"}});
  counter("chat_chunks_dropped_total", dropped,
          [](S s) -> const metrics::Counter& { return s.counters().stale_attempts_dropped; }, {{"reason", "older_attempt"}});
  counter("chat_chunks_dropped_total", dropped,
          [](S s) -> const metrics::Counter& { return s.counters().no_room_dropped; }, {{"reason", "no_room"}});
  counter("chat_chunks_dropped_total", dropped,
          [](S s) -> const metrics::Counter& { return s.counters().wrong_session_dropped; },
          {{"reason", "wrong_session"}});
  counter("chat_chunks_missing_total", "Chunks given up after BUFFER_MISSING_CHUNK_TIMEOUT.",
          [](S s) -> const metrics::Counter& { return s.counters().chunks_skipped; });
  counter("chat_gap_fills_total", "Times a gap or a silent reply made the pod ask for chunks again (log or replay).",
          [](S s) -> const metrics::Counter& { return s.counters().replays_requested; });
  counter("chat_replies_restarted_total", "Replies started over by a newer attempt after a worker died.",
          [](S s) -> const metrics::Counter& { return s.counters().replies_restarted; });
  const char* cleanups = "Reorder buffers closed without a final chunk, by why.";
  counter("chat_buffer_cleanups_total", cleanups,
          [](S s) -> const metrics::Counter& { return s.counters().buffers_expired; }, {{"reason", "timeout"}});
  counter("chat_buffer_cleanups_total", cleanups,
          [](S s) -> const metrics::Counter& { return s.counters().buffers_evicted; }, {{"reason", "evicted"}});
  counter("chat_buffer_cleanups_total", cleanups,
          [](S s) -> const metrics::Counter& { return s.counters().buffers_abandoned; }, {{"reason", "abandoned"}});
  counter("chat_buffer_cleanups_total", cleanups,
          [](S s) -> const metrics::Counter& { return s.counters().never_arrived; }, {{"reason", "never_arrived"}});
  counter("chat_reply_delays_announced_total", "Delayed events sent (a watched reply waited 3 s for a chunk).",
          [](S s) -> const metrics::Counter& { return s.gauges().delays_announced; });
  const char* resumes = "Streams that reconnected with a cursor, by how they were served.";
  counter("chat_resumes_total", resumes, [](S s) -> const metrics::Counter& { return s.gauges().resumed_from_backlog; },
          {{"outcome", "continued"}});
  counter("chat_resumes_total", resumes, [](S s) -> const metrics::Counter& { return s.gauges().resumed_from_log; },
          {{"outcome", "from_log"}});
  counter("chat_resumes_total", resumes, [](S s) -> const metrics::Counter& { return s.gauges().resumes_reset; },
          {{"outcome", "reset"}});
  counter("chat_resumes_total", resumes, [](S s) -> const metrics::Counter& { return s.gauges().catch_ups_cut; },
          {{"outcome", "cut"}});
  std::uint64_t kept = 0;
  metrics::HistogramSnapshot first_chunk;
  for (const auto& s : slots_) {
    kept += s->shard.gauges().broadcasts_kept.load(std::memory_order_relaxed);
    first_chunk += s->shard.gauges().time_to_first_chunk.snapshot();
  }
  out.counter("chat_broadcast_chunks_kept_total", "Broadcast chunks of sessions not held here, kept a few seconds.",
              static_cast<double>(kept));
  out.histogram("chat_time_to_first_chunk_seconds", "From a POST accepted here to its reply's first chunk streamed.",
                first_chunk);
}

bool SessionHub::has_room_for_reply(std::string_view session_id) const {
  const auto& gauges = slots_[slot_index(session_id)]->shard.gauges();
  return gauges.accepted_buffers.load(std::memory_order_relaxed) < options_.buffer.max_buffers;
}

HubStats SessionHub::stats() const {
  HubStats out;
  for (const auto& s : slots_) {
    const auto& g = s->shard.gauges();
    out.streams += g.streams.load(std::memory_order_relaxed);
    out.sessions += g.sessions.load(std::memory_order_relaxed);
    out.buffers += g.buffers.load(std::memory_order_relaxed);
    out.reply_bytes += g.reply_bytes.load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace chat::hub
