#include "chat/session_hub.hpp"

#include "chat/session_channel.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>
#include <deque>
#include <unordered_set>
#include <mutex>

#include "common/time.hpp"
#include "log/log.hpp"

namespace asio = boost::asio;

namespace chat {
namespace {

SteadyTime now() { return std::chrono::steady_clock::now(); }

}  // namespace

struct SessionHub::Shard {
  Shard(asio::io_context& ioc, const HubOptions& options, SessionHub& hub)
      : strand(asio::make_strand(ioc)),
        buffers(options.buffer),
        options(options),
        hub(hub),
        tick_timer(strand),
        cleanup_timer(strand),
        heartbeat_timer(strand) {}

  asio::strand<asio::io_context::executor_type> strand;
  buffer::BufferManager buffers;
  const HubOptions& options;
  SessionHub& hub;
  std::unordered_map<std::string, Channel> channels;
  std::vector<buffer::Event> events;  // scratch, reused
  // Finished replies kept for resume, oldest first, within a byte budget.
  std::deque<std::pair<std::string, std::string>> finished_order;  // (session, message)
  std::size_t retained_bytes = 0;
  // Replies dropped from the resume window: their cursors get a reset event.
  std::unordered_set<std::string> expired;
  std::deque<std::string> expired_order;
  asio::steady_timer tick_timer;
  asio::steady_timer cleanup_timer;
  asio::steady_timer heartbeat_timer;
  bool stopped = false;

  // Read by stats() from any thread.
  std::atomic<std::size_t> connection_count{0};
  std::atomic<std::size_t> session_count{0};
  std::atomic<std::size_t> buffer_count{0};
  std::atomic<std::size_t> streaming_count{0};
  std::atomic<std::uint64_t> broadcasts_ignored{0};
  mutable std::mutex counters_mutex;  // guards counters_snapshot
  buffer::Counters counters_snapshot;

  void on_chunk(protocol::ResponseChunk chunk, bool broadcast) {
    if (broadcast && !channels.contains(chunk.session_id) && !buffers.has(chunk.message_id)) {
      broadcasts_ignored.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    events.clear();
    buffers.push(std::move(chunk), now(), events);
    process_events();
  }

  void expect(const std::string& session_id, const std::string& message_id) {
    buffers.expect(session_id, message_id, now());
    channels[session_id].backlog(message_id);
    publish_counts();
  }

  void process_events() {
    for (auto& e : events) {
      if (auto* ready = std::get_if<buffer::ChunkReady>(&e)) {
        deliver(ready->chunk.session_id, ready->chunk.message_id, ready->chunk.chunk_id, sse::chunk_frame(ready->chunk));
      } else if (auto* missing = std::get_if<buffer::ChunksMissing>(&e)) {
        log::warn("chunks_missing", {{"session_id", missing->session_id}, {"message_id", missing->message_id},
                                     {"count", missing->ids.size()}, {"first", missing->ids.front()}});
        deliver(missing->session_id, missing->message_id, kNotAChunk,
                sse::error_frame(missing->message_id, "chunks_missing", "some chunks of this reply never arrived",
                                 missing->ids));
      } else if (auto* done = std::get_if<buffer::MessageFinished>(&e)) {
        finish(std::move(done->message));
      }
    }
    events.clear();
    publish_counts();
  }

  void finish(buffer::FinishedMessage m) {
    using buffer::MessageStatus;
    if (m.status == MessageStatus::error)
      deliver(m.session_id, m.message_id, kNotAChunk,
              sse::error_frame(m.message_id, m.error_code.empty() ? "provider_error" : m.error_code,
                               m.error_message.empty() ? "the AI provider failed" : m.error_message));
    else if (m.status == MessageStatus::cancelled)
      deliver(m.session_id, m.message_id, kNotAChunk, sse::error_frame(m.message_id, "cancelled", "the reply was cancelled"));
    else if (m.status == MessageStatus::incomplete && m.error_code != "chunks_missing")
      deliver(m.session_id, m.message_id, kNotAChunk,
              sse::error_frame(m.message_id, m.error_code, "the reply did not finish in time"));
    deliver(m.session_id, m.message_id, kNotAChunk, sse::complete_frame(m));
    if (auto it = channels.find(m.session_id); it != channels.end() && it->second.finish(m.message_id, now()))
      finished_order.emplace_back(m.session_id, m.message_id);
    trim_retained();
    hub.on_finished_(std::move(m));
  }

  void deliver(const std::string& session_id, const std::string& message_id, std::int64_t chunk_id,
               const sse::Frame& frame) {
    retained_bytes += channels[session_id].publish(message_id, chunk_id, frame, options.max_backlog_frames);
  }

  void attach(std::shared_ptr<sse::SseConnection> connection, std::optional<ResumeCursor> cursor) {
    if (stopped) return connection->close();
    auto& channel = channels[connection->session_id()];
    if (cursor && !channel.find(cursor->message_id) && expired.contains(cursor->message_id)) {
      connection->send(sse::reset_frame(connection->session_id(), "resume_window_passed"));
      cursor.reset();
    }
    auto plan = channel.plan_join(cursor, now(), options.late_join_window);
    if (plan.reset) connection->send(sse::reset_frame(connection->session_id(), "reply_too_long_to_replay"));
    connection->send_backlog(plan.frames);
    if (!channel.has_members()) {
      session_count.fetch_add(1, std::memory_order_relaxed);
      // The first stream of the session on this pod: workers may have sent its
      // running reply elsewhere until now.
      hub.on_replay_(connection->session_id(), {});
    }
    Member member{std::move(connection), {}, kNotAChunk};
    if (cursor) {
      member.skip_message = cursor->message_id;
      member.skip_through = cursor->chunk_id;
    }
    channel.add(std::move(member));
    connection_count.fetch_add(1, std::memory_order_relaxed);
  }

  void detach(const std::shared_ptr<sse::SseConnection>& connection, std::string_view reason) {
    auto it = channels.find(connection->session_id());
    if (it != channels.end() && it->second.remove(connection)) {
      connection_count.fetch_sub(1, std::memory_order_relaxed);
      if (!it->second.has_members()) session_count.fetch_sub(1, std::memory_order_relaxed);
      if (it->second.idle()) channels.erase(it);
    }
    hub.on_detached_(connection, reason);
  }

  // Drops the oldest finished replies while over the byte budget or the window.
  void trim_retained() {
    auto t = now();
    while (!finished_order.empty()) {
      auto [session_id, message_id] = finished_order.front();
      auto it = channels.find(session_id);
      Backlog* b = it == channels.end() ? nullptr : it->second.find(message_id);
      bool too_old = b && t - b->finished_at >= options.replay_window;
      if (b && !too_old && retained_bytes <= options.replay_max_bytes) break;
      finished_order.pop_front();
      if (!b) continue;
      retained_bytes -= it->second.drop_finished_if([&](const Backlog& x) { return x.message_id == message_id; });
      remember_expired(message_id);
      if (it->second.idle()) channels.erase(it);
    }
  }

  void remember_expired(const std::string& message_id) {
    if (!expired.insert(message_id).second) return;
    expired_order.push_back(message_id);
    if (expired_order.size() > 100'000) {
      expired.erase(expired_order.front());
      expired_order.pop_front();
    }
  }

  std::vector<std::string> end_session(const std::string& session_id, const sse::Frame& last) {
    auto dropped = buffers.drop_session(session_id);
    publish_counts();
    auto it = channels.find(session_id);
    if (it == channels.end()) return dropped;
    for (const auto& m : it->second.members()) m.connection->close(last);
    retained_bytes -= it->second.drop_backlogs();
    if (it->second.idle()) channels.erase(it);
    return dropped;
  }

  void tick() {
    events.clear();
    auto t = now();
    auto watched = [this](const std::string& session_id) {
      auto it = channels.find(session_id);
      return it != channels.end() && it->second.has_members();
    };
    for (const auto& [session, message] : buffers.stalled(t, options.replay_after, options.replay_after * 2, watched))
      hub.on_replay_(session, message);
    buffers.check_gaps(t, events);
    process_events();
    publish_counters();
  }

  void cleanup() {
    events.clear();
    buffers.expire_old(now(), events);
    process_events();
    trim_retained();
  }

  void heartbeat() {
    auto frame = sse::ping_frame(unix_now());
    for (const auto& [id, channel] : channels)
      for (const auto& m : channel.members()) m.connection->send(frame);
  }

  // Cheap enough for every chunk; the counters are copied on each tick.
  void publish_counts() {
    buffer_count.store(buffers.size(), std::memory_order_relaxed);
    streaming_count.store(buffers.streaming(), std::memory_order_relaxed);
  }

  void publish_counters() {
    std::lock_guard lock(counters_mutex);
    counters_snapshot = buffers.counters();
  }

  template <class Fn>
  void every(asio::steady_timer& timer, std::chrono::milliseconds interval, Fn fn) {
    timer.expires_after(interval);
    timer.async_wait([this, &timer, interval, fn](boost::system::error_code ec) {
      if (ec || stopped) return;
      fn();
      every(timer, interval, fn);
    });
  }

  void start() {
    auto gap_check = std::clamp(options.buffer.missing_chunk_timeout / 4, std::chrono::milliseconds{10},
                                std::chrono::milliseconds{1000});
    every(tick_timer, gap_check, [this] { tick(); });
    every(cleanup_timer, options.cleanup_interval, [this] { cleanup(); });
    every(heartbeat_timer, options.heartbeat_interval, [this] { heartbeat(); });
  }

  void stop(const sse::Frame& last) {
    stopped = true;
    tick_timer.cancel();
    cleanup_timer.cancel();
    heartbeat_timer.cancel();
    for (const auto& [id, channel] : channels)
      for (const auto& m : channel.members()) m.connection->close(last);
  }
};

SessionHub::SessionHub(asio::io_context& ioc, HubOptions options, FinishedHandler on_finished,
                       ConnectionHandler on_detached, ReplayHandler on_replay)
    : options_(std::move(options)),
      on_finished_(std::move(on_finished)),
      on_detached_(std::move(on_detached)),
      on_replay_(std::move(on_replay)) {
  shards_.reserve(options_.shards);
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options_.shards); ++i)
    shards_.push_back(std::make_unique<Shard>(ioc, options_, *this));
}

SessionHub::~SessionHub() = default;

void SessionHub::start() {
  for (auto& s : shards_) asio::post(s->strand, [shard = s.get()] { shard->start(); });
}

SessionHub::Shard& SessionHub::shard_for(const std::string& session_id) {
  return *shards_[std::hash<std::string>{}(session_id) % shards_.size()];
}

void SessionHub::attach(std::shared_ptr<sse::SseConnection> connection, std::optional<ResumeCursor> cursor) {
  auto& shard = shard_for(connection->session_id());
  // Detach goes through the same shard, after this attach.
  asio::post(shard.strand, [&shard, connection = std::move(connection), cursor = std::move(cursor)]() mutable {
    shard.attach(std::move(connection), std::move(cursor));
  });
}

void SessionHub::detach(const std::shared_ptr<sse::SseConnection>& connection, std::string_view reason) {
  auto& shard = shard_for(connection->session_id());
  asio::post(shard.strand, [&shard, connection, reason = std::string(reason)] { shard.detach(connection, reason); });
}

void SessionHub::on_chunk(protocol::ResponseChunk chunk, bool broadcast) {
  auto& shard = shard_for(chunk.session_id);
  asio::post(shard.strand, [&shard, chunk = std::move(chunk), broadcast]() mutable { shard.on_chunk(std::move(chunk), broadcast); });
}

void SessionHub::expect(const std::string& session_id, const std::string& message_id) {
  auto& shard = shard_for(session_id);
  asio::post(shard.strand, [&shard, session_id, message_id] { shard.expect(session_id, message_id); });
}

void SessionHub::end_session(const std::string& session_id, std::function<void(std::vector<std::string>)> on_dropped) {
  auto& shard = shard_for(session_id);
  asio::post(shard.strand, [&shard, session_id, on_dropped = std::move(on_dropped)] {
    auto dropped = shard.end_session(session_id, sse::reset_frame(session_id, "session_deleted"));
    if (on_dropped) on_dropped(std::move(dropped));
  });
}

void SessionHub::close_all(sse::Frame last) {
  for (auto& s : shards_) asio::post(s->strand, [shard = s.get(), last] { shard->stop(last); });
}

HubStats SessionHub::stats() const {
  HubStats out;
  for (const auto& s : shards_) {
    out.connections += s->connection_count.load(std::memory_order_relaxed);
    out.sessions += s->session_count.load(std::memory_order_relaxed);
    out.buffers += s->buffer_count.load(std::memory_order_relaxed);
    out.broadcasts_ignored += s->broadcasts_ignored.load(std::memory_order_relaxed);
    out.streaming_buffers += s->streaming_count.load(std::memory_order_relaxed);
    std::lock_guard lock(s->counters_mutex);
    out.buffer_counters += s->counters_snapshot;
  }
  return out;
}

}  // namespace chat
