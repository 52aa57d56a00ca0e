#pragma once
// The pod's sessions: their SSE connections, the reorder buffers of their
// replies, and the frames a late stream still needs.
//
// Sharded by session id; each shard is a strand that owns its sessions outright
// (no locks): every chunk, attach and detach of a session runs on its shard, so a
// session's frames reach every connection in one order. A frame is encoded once
// per session and shared by all its connections.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "buffer/buffer_manager.hpp"
#include "chat/session_channel.hpp"
#include "sse/sse_connection.hpp"

namespace chat {

struct HubOptions {
  std::size_t shards = 8;
  buffer::Limits buffer;
  std::chrono::milliseconds cleanup_interval{30'000};
  std::chrono::milliseconds heartbeat_interval{10'000};
  // A reply no stream saw is kept this long for a stream that opens late.
  std::chrono::milliseconds late_join_window{30'000};
  // Finished replies are kept this long (and within the byte budget, per shard)
  // for streams that resume with Last-Event-ID.
  std::chrono::milliseconds replay_window{600'000};
  std::size_t replay_max_bytes = 8 * 1024 * 1024;
  // Frames kept per in-flight reply for late streams (beyond: the late stream
  // gets an explicit reset instead of a silent gap).
  std::size_t max_backlog_frames = 20'000;
  // A gap this old makes the pod ask the workers for the message again (the
  // routing cache may have sent its chunks elsewhere for up to a second).
  std::chrono::milliseconds replay_after{1'000};
};

struct HubStats {
  std::size_t connections = 0;
  std::size_t sessions = 0;  // sessions with at least one connection
  std::size_t buffers = 0;
  std::size_t streaming_buffers = 0;  // buffers that received a chunk
  buffer::Counters buffer_counters;
  std::uint64_t broadcasts_ignored = 0;
};

class SessionHub {
 public:
  using FinishedHandler = std::function<void(buffer::FinishedMessage)>;
  using ConnectionHandler = std::function<void(const std::shared_ptr<sse::SseConnection>&, std::string_view reason)>;
  // `message_id` empty: everything running for the session (a first stream);
  // else that one reply, finished or not (a gap).
  using ReplayHandler = std::function<void(const std::string& session_id, const std::string& message_id)>;

  // Each runs on a shard strand: `on_finished` for each message whose buffer is
  // done (store it); `on_detached` when a connection leaves (unregister it);
  // `on_replay` when the session's chunks should be sent to this pod again.
  SessionHub(boost::asio::io_context& ioc, HubOptions options, FinishedHandler on_finished,
             ConnectionHandler on_detached, ReplayHandler on_replay);
  ~SessionHub();

  void start();
  // The connection has been started; the hub sends it what it missed — from
  // `cursor` on, or without one the session's running replies from chunk 0 —
  // then everything live.
  void attach(std::shared_ptr<sse::SseConnection> connection, std::optional<ResumeCursor> cursor = std::nullopt);
  // From the connection's closed handler.
  void detach(const std::shared_ptr<sse::SseConnection>& connection, std::string_view reason);
  // A chunk from the bus. `broadcast`: kept only if this pod holds the session.
  void on_chunk(protocol::ResponseChunk chunk, bool broadcast);
  // This pod accepted the message: keep its chunks even before a stream opens.
  void expect(const std::string& session_id, const std::string& message_id);
  // The session was deleted: its streams get a reset event and end, its
  // buffers are dropped (late chunks of its replies are ignored);
  // `on_dropped` gets the ids of the replies that were still running here.
  void end_session(const std::string& session_id, std::function<void(std::vector<std::string>)> on_dropped);
  // Shutdown: every connection gets `last` and is closed once it is written.
  void close_all(sse::Frame last);

  HubStats stats() const;

 private:
  struct Shard;
  Shard& shard_for(const std::string& session_id);

  std::vector<std::unique_ptr<Shard>> shards_;
  HubOptions options_;
  FinishedHandler on_finished_;
  ConnectionHandler on_detached_;
  ReplayHandler on_replay_;
};

}  // namespace chat
