#include "chat/session_hub.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>
#include <mutex>

#include "common/time.hpp"
#include "log/log.hpp"

namespace asio = boost::asio;

namespace chat {
namespace {

// The frames of one reply, kept while it streams so a stream that opens late
// gets it from chunk 0.
struct Backlog {
  std::string message_id;
  std::vector<sse::Frame> frames;
  bool overflowed = false;
  bool seen_live = false;  // some connection got it as it streamed
  bool finished = false;
  SteadyTime finished_at{};
};

struct Channel {
  std::vector<std::shared_ptr<sse::SseConnection>> connections;
  std::vector<Backlog> backlogs;  // in the order the replies started

  Backlog& backlog(const std::string& message_id) {
    for (auto& b : backlogs)
      if (b.message_id == message_id) return b;
    backlogs.push_back(Backlog{message_id, {}, false, false, false, {}});
    return backlogs.back();
  }
  bool idle() const { return connections.empty() && backlogs.empty(); }
};

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
        deliver(ready->chunk.session_id, ready->chunk.message_id, sse::chunk_frame(ready->chunk));
      } else if (auto* missing = std::get_if<buffer::ChunksMissing>(&e)) {
        log::warn("chunks_missing", {{"session_id", missing->session_id}, {"message_id", missing->message_id},
                                     {"count", missing->ids.size()}, {"first", missing->ids.front()}});
        deliver(missing->session_id, missing->message_id,
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
      deliver(m.session_id, m.message_id,
              sse::error_frame(m.message_id, m.error_code.empty() ? "provider_error" : m.error_code,
                               m.error_message.empty() ? "the AI provider failed" : m.error_message));
    else if (m.status == MessageStatus::cancelled)
      deliver(m.session_id, m.message_id, sse::error_frame(m.message_id, "cancelled", "the reply was cancelled"));
    else if (m.status == MessageStatus::incomplete && m.error_code != "chunks_missing")
      deliver(m.session_id, m.message_id,
              sse::error_frame(m.message_id, m.error_code, "the reply did not finish in time"));
    deliver(m.session_id, m.message_id, sse::complete_frame(m));
    if (auto it = channels.find(m.session_id); it != channels.end()) {
      auto& backlogs = it->second.backlogs;
      for (auto& b : backlogs)
        if (b.message_id == m.message_id) {
          b.finished = true;
          b.finished_at = now();
        }
      // A reply some stream saw needs no late-join copy any more.
      std::erase_if(backlogs, [](const Backlog& b) { return b.finished && b.seen_live; });
      if (it->second.idle()) channels.erase(it);
    }
    hub.on_finished_(std::move(m));
  }

  void deliver(const std::string& session_id, const std::string& message_id, const sse::Frame& frame) {
    auto& channel = channels[session_id];
    auto& backlog = channel.backlog(message_id);
    if (backlog.frames.size() < options.max_backlog_frames) backlog.frames.push_back(frame);
    else backlog.overflowed = true;
    if (channel.connections.empty()) return;
    backlog.seen_live = true;
    for (const auto& c : channel.connections) c->send(frame);
  }

  void attach(std::shared_ptr<sse::SseConnection> connection) {
    if (stopped) return connection->close();
    auto& channel = channels[connection->session_id()];
    for (auto& b : channel.backlogs) {
      if (b.overflowed) {
        connection->send(sse::reset_frame(connection->session_id(), "reply_too_long_to_replay"));
        continue;
      }
      connection->send_backlog(b.frames);
      b.seen_live = true;
    }
    std::erase_if(channel.backlogs, [](const Backlog& b) { return b.finished; });
    if (channel.connections.empty()) {
      session_count.fetch_add(1, std::memory_order_relaxed);
      // The first stream of the session on this pod: workers may have sent its
      // running reply elsewhere until now.
      hub.on_replay_(connection->session_id());
    }
    channel.connections.push_back(std::move(connection));
    connection_count.fetch_add(1, std::memory_order_relaxed);
  }

  void detach(const std::shared_ptr<sse::SseConnection>& connection, std::string_view reason) {
    auto it = channels.find(connection->session_id());
    if (it != channels.end()) {
      auto& conns = it->second.connections;
      auto pos = std::find(conns.begin(), conns.end(), connection);
      if (pos != conns.end()) {
        conns.erase(pos);
        connection_count.fetch_sub(1, std::memory_order_relaxed);
        if (conns.empty()) session_count.fetch_sub(1, std::memory_order_relaxed);
      }
      if (it->second.idle()) channels.erase(it);
    }
    hub.on_detached_(connection, reason);
  }

  void tick() {
    events.clear();
    auto t = now();
    for (const auto& session : buffers.stalled(t, options.replay_after, options.replay_after * 2)) hub.on_replay_(session);
    buffers.check_gaps(t, events);
    process_events();
  }

  void cleanup() {
    events.clear();
    auto t = now();
    buffers.expire_old(t, events);
    process_events();
    for (auto it = channels.begin(); it != channels.end();) {
      std::erase_if(it->second.backlogs, [&](const Backlog& b) {
        return b.finished && t - b.finished_at >= options.late_join_window;
      });
      it = it->second.idle() ? channels.erase(it) : std::next(it);
    }
  }

  void heartbeat() {
    auto frame = sse::ping_frame(unix_now());
    for (const auto& [id, channel] : channels)
      for (const auto& c : channel.connections) c->send(frame);
  }

  void publish_counts() {
    buffer_count.store(buffers.size(), std::memory_order_relaxed);
    streaming_count.store(buffers.streaming(), std::memory_order_relaxed);
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
      for (const auto& c : channel.connections) c->close(last);
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

void SessionHub::attach(std::shared_ptr<sse::SseConnection> connection) {
  auto& shard = shard_for(connection->session_id());
  // Detach goes through the same shard, after this attach.
  asio::post(shard.strand, [&shard, connection = std::move(connection)]() mutable { shard.attach(std::move(connection)); });
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
