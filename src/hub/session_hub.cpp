#include "hub/session_hub.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>

#include "common/countdown.hpp"

namespace asio = boost::asio;

namespace chat::hub {

// A shard with the strand that owns it and the timers that drive it. The
// waiters are strand-only state, like the shard.
struct SessionHub::Slot {
  Slot(asio::io_context& ioc, const HubOptions& options, ShardHandlers handlers, Clock clock)
      : strand(asio::make_strand(ioc)),
        shard(options, std::move(handlers), std::move(clock)),
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

  // Runs `fn` on the strand, then tells a waiter whose condition now holds.
  template <class Fn>
  void run(Fn fn) {
    asio::post(strand, [this, fn = std::move(fn)]() mutable {
      fn(shard);
      notify_waiters();
    });
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
      fn(shard);
      notify_waiters();
      every(timer, interval, fn);
    });
  }

  void start(const HubOptions& options) {
    auto gap_check = std::clamp(options.buffer.missing_chunk_timeout / 4, std::chrono::milliseconds{10},
                                std::chrono::milliseconds{1000});
    every(gap_timer, gap_check, [](SessionShard& s) { s.check_gaps(); });
    every(cleanup_timer, options.cleanup_interval, [](SessionShard& s) { s.cleanup(); });
    every(heartbeat_timer, options.heartbeat_interval, [](SessionShard& s) { s.heartbeat(); });
  }

  void stop() {
    stopped = true;
    gap_timer.cancel();
    cleanup_timer.cancel();
    heartbeat_timer.cancel();
  }
};

SessionHub::SessionHub(asio::io_context& ioc, HubOptions options, ShardHandlers handlers, Clock clock)
    : options_(std::move(options)) {
  auto count = std::max<std::size_t>(1, options_.shards);
  slots_.reserve(count);
  for (std::size_t i = 0; i < count; ++i) slots_.push_back(std::make_unique<Slot>(ioc, options_, handlers, clock));
}

SessionHub::~SessionHub() = default;

void SessionHub::start() {
  for (auto& s : slots_) asio::post(s->strand, [slot = s.get(), this] { slot->start(options_); });
}

SessionHub::Slot& SessionHub::slot_for(const std::string& session_id) {
  return *slots_[std::hash<std::string>{}(session_id) % slots_.size()];
}

void SessionHub::attach(std::shared_ptr<sse::EventSink> stream, std::optional<sse::ResumeCursor> cursor) {
  // The detach of this stream goes through the same strand, after this.
  slot_for(stream->session_id()).run([stream = std::move(stream), cursor = std::move(cursor)](SessionShard& s) mutable {
    s.attach(std::move(stream), std::move(cursor));
  });
}

void SessionHub::detach(std::shared_ptr<sse::EventSink> stream) {
  slot_for(stream->session_id()).run([stream = std::move(stream)](SessionShard& s) { s.detach(stream); });
}

void SessionHub::on_chunk(protocol::ResponseChunk chunk, bool broadcast) {
  slot_for(chunk.session_id).run([chunk = std::move(chunk), broadcast](SessionShard& s) mutable {
    s.on_chunk(std::move(chunk), broadcast);
  });
}

void SessionHub::expect(const std::string& session_id, const std::string& message_id) {
  slot_for(session_id).run([session_id, message_id](SessionShard& s) { s.expect(session_id, message_id); });
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

void SessionHub::end_session(const std::string& session_id, std::function<void(std::vector<std::string>)> on_dropped) {
  slot_for(session_id).run([session_id, on_dropped = std::move(on_dropped)](SessionShard& s) {
    auto dropped = s.end_session(session_id);
    if (on_dropped) on_dropped(std::move(dropped));
  });
}

void SessionHub::when_settled(std::function<void()> done) {
  auto arrive = make_countdown(slots_.size(), std::move(done));
  for (auto& s : slots_)
    asio::post(s->strand, [slot = s.get(), arrive] {
      slot->settled_waiter = arrive;
      slot->notify_waiters();
    });
}

void SessionHub::close_all(std::function<sse::Frame()> last, std::function<void()> done) {
  auto arrive = make_countdown(slots_.size(), std::move(done));
  for (auto& s : slots_)
    asio::post(s->strand, [slot = s.get(), last, arrive] {
      slot->shard.close_all(last);
      slot->empty_waiter = arrive;
      slot->notify_waiters();
    });
}

void SessionHub::stop() {
  for (auto& s : slots_) asio::post(s->strand, [slot = s.get()] { slot->stop(); });
}

HubStats SessionHub::stats() const {
  HubStats out;
  for (const auto& s : slots_) {
    const auto& g = s->shard.gauges();
    out.streams += g.streams.load(std::memory_order_relaxed);
    out.sessions += g.sessions.load(std::memory_order_relaxed);
    out.buffers += g.buffers.load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace chat::hub
