#pragma once
// A share of the pod's sessions: their streams, the reorder buffers of their
// replies, and the frames a late or resuming stream still needs. Pure logic on
// an injected clock, like the reorder buffer: no threads, no timers, no I/O of
// its own. The hub runs each shard one run at a time (on its strand, or on the
// bus's delivery thread when the shard is idle) and drives its periodic work;
// nothing here is thread-safe except the gauges.

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "buffer/buffer_manager.hpp"
#include "hub/hub_options.hpp"
#include "hub/logged_reply.hpp"
#include "hub/recent_broadcasts.hpp"
#include "common/short_string.hpp"
#include "hub/session_channel.hpp"
#include "protocol/messages.hpp"
#include "sse/event_sink.hpp"

namespace chat::hub {

using Clock = std::function<SteadyTime()>;

// The error code of a reply that the pod's shutdown cut short.
inline constexpr char kShutdown[] = "shutdown";

// What a shard hands on. Each runs where the shard runs (its strand, or the
// bus's delivery thread) and must not block.
struct ShardHandlers {
  // A reply's buffer is done (or a finished reply was read from the log): it
  // goes to the store, which keeps the first write.
  std::function<void(buffer::FinishedMessage)> reply_finished;
  // Chunks should come again: with `message_id` empty, the session's running
  // replies (its first stream here); else that reply (a gap, or an expected
  // reply still silent while someone watches). Answered by fill_from_log()
  // when the pod has a chunk log, else by the workers' replay.
  std::function<void(const std::string& session_id, const std::string& message_id)> replay_wanted;
  // A stream resumes a reply this pod does not hold (only with log_catch_up):
  // answered by resume_from_log().
  std::function<void(const std::string& session_id, const std::string& stream_id, const sse::ResumeCursor& cursor)>
      catch_up_wanted;
  // How many times the bus has connected again after losing its server (0
  // without one): chunks sent to this pod while it was away are lost, so a
  // change asks about every waiting reply at once instead of after its back-off.
  std::function<std::uint64_t()> bus_reconnects;
};

// Read from any thread (health, capacity checks, metrics); written by the shard only.
struct ShardGauges {
  std::atomic<std::size_t> streams{0};
  std::atomic<std::size_t> sessions{0};  // sessions with at least one stream
  std::atomic<std::size_t> buffers{0};
  std::atomic<std::size_t> accepted_buffers{0};  // of replies accepted here
  std::atomic<std::size_t> reply_bytes{0};  // SessionShard::reply_bytes()
  std::atomic<std::uint64_t> broadcasts_kept{0};
  // From the POST accepted (the reply expected here) to its first chunk
  // handed to the streams.
  metrics::Histogram time_to_first_chunk{metrics::kLatencyBuckets};
  // Streams that came back with a cursor, by how they were served.
  metrics::Counter resumed_from_backlog;
  metrics::Counter resumed_from_log;
  metrics::Counter resumes_reset;  // the cursor could not be served: reset
  metrics::Counter catch_ups_cut;  // held too many live frames while the log was read
  metrics::Counter delays_announced;
};

class SessionShard {
 public:
  // `reply_sessions`: whose each reply of the pod is, shared by its shards
  // (none: a chunk is checked against this shard's buffers only).
  SessionShard(const HubOptions& options, ShardHandlers handlers, Clock clock,
               buffer::ReplySessions* reply_sessions = nullptr);

  // A chunk from the bus. `broadcast`: buffered only if this shard holds its
  // session or already buffers its reply; else kept a few seconds in case a
  // stream of the session opens.
  void on_chunk(protocol::ResponseChunk chunk, bool broadcast);
  // This pod accepted the message for `asked_by`'s chat: keep its chunks even
  // before a stream opens.
  void expect(const std::string& session_id, const std::string& message_id, const std::string& asked_by = {});
  void forget(const std::string& session_id, const std::string& message_id);
  // See BufferManager::cancel_unstarted: a cancelled reply ends on the
  // session's streams and goes to the store.
  buffer::CancelResult cancel_unstarted(const std::string& message_id, const std::string& user_id);
  // The stream gets what it missed (from `cursor`, or the running replies from
  // chunk 0), then everything live. `owner_checked_at`: when its right to the
  // session was checked; if the session was deleted since, the stream ends
  // with `session_deleted` instead (its id may belong to someone else now).
  void attach(std::shared_ptr<sse::EventSink> stream, std::optional<sse::ResumeCursor> cursor,
              SteadyTime owner_checked_at = SteadyTime::max());
  void detach(const std::shared_ptr<sse::EventSink>& stream);
  // Chunks read from the log: the replies buffered here and those still
  // running go through the reorder buffers; finished ones this pod does not
  // hold are left alone.
  void fill_from_log(std::vector<protocol::ResponseChunk> chunks);
  // The log's answer to catch_up_wanted (nullopt: the read failed).
  void resume_from_log(const std::string& session_id, const std::string& stream_id, const sse::ResumeCursor& cursor,
                       std::optional<std::vector<protocol::ResponseChunk>> chunks);
  // The session was deleted: its streams get a reset and end (and so does one
  // checked before this that attaches later), its buffers are dropped. Returns
  // the ids of the replies that were still running here.
  std::vector<std::string> end_session(const std::string& session_id);
  // Shutdown with no one left to finish them (see BufferManager): the replies
  // accepted here end on their streams and go to the store, incomplete with
  // `reason`. Returns how many.
  std::size_t finish_accepted(const char* reason);
  // Shutdown: every stream gets its `last()` frame and closes once its queue is
  // written; later attaches are refused.
  void close_all(const std::function<sse::Frame()>& last);

  // Periodic work, driven by the hub: missing-chunk timeouts, replay asks and
  // delay notices (often); buffer expiry and the resume window (every cleanup
  // interval); heartbeats.
  void check_gaps();
  void cleanup();
  // Pings one slice of the shard's streams: called kHeartbeatSlices times per
  // heartbeat interval, so every stream gets one ping an interval. A pod with
  // tens of thousands of idle streams would otherwise queue all their pings at
  // once, ahead of live chunks (hundreds of ms of p99 at 17k streams a pod).
  static constexpr std::size_t kHeartbeatSlices = 16;
  void heartbeat();

  // Buffers something here depends on (a stream or the store): shutdown waits
  // for these.
  std::size_t owed() const;
  const ShardGauges& gauges() const { return gauges_; }
  const buffer::Counters& counters() const { return buffers_.counters(); }

 private:
  void push(protocol::ResponseChunk chunk);
  void process_events();
  void finish(buffer::FinishedMessage m);
  // The reply's frames kept for the session's streams go; so does the
  // session's channel if nothing else holds it.
  void drop_backlog(const std::string& session_id, const std::string& message_id);
  void deliver(const std::string& session_id, const std::string& message_id, std::int64_t position,
               const sse::Frame& frame);
  void send_logged_reply(Member& member, const LoggedReply& reply);
  void store_logged(const LoggedReply& reply);
  void finish_catch_up(Channel& channel, Member& member);
  void trim_retained();
  void remember_expired(const std::string& message_id);
  void remember_ended(const std::string& session_id);
  bool ended_since(const std::string& session_id, SteadyTime checked_at) const;
  bool watched(const std::string& session_id) const;
  // The session's channel, made if it has none.
  Channel& channel(const std::string& session_id);
  void publish_gauges();
  // Reply text in the buffers plus every frame kept for late and resuming streams.
  std::size_t reply_bytes() const;
  bool over_memory_share() const;

  const HubOptions& options_;
  ShardHandlers handlers_;
  Clock clock_;
  buffer::ReplySessions* reply_sessions_;  // shared by the shards; null in tests of one shard
  buffer::BufferManager buffers_;
  RecentBroadcasts broadcasts_;
  // Session id -> its channel. One node per watched session, most holding one
  // idle stream: short keys and no cached hash keep it in a 96-byte block.
  std::unordered_map<ShortString, Channel, StringKeyHash, StringKeyEqual> channels_;
  std::size_t heartbeat_slice_ = 0;
  std::uint64_t bus_reconnects_seen_ = 0;
  std::vector<buffer::Event> events_;  // scratch, reused
  // Finished replies kept for resume, oldest first, within a byte budget.
  std::deque<std::pair<std::string, std::string>> finished_order_;  // (session, message)
  std::size_t retained_bytes_ = 0;
  // Replies dropped from the resume window: their cursors get a reset event.
  std::unordered_set<std::string> expired_;
  std::deque<std::string> expired_order_;
  // Sessions deleted lately, and when (the latest time): a stream whose owner
  // was checked before that is on its way here through the store and the
  // limiter, and must not join the session's next owner.
  std::unordered_map<std::string, SteadyTime> ended_sessions_;
  std::deque<std::string> ended_order_;
  bool closed_ = false;
  ShardGauges gauges_;
};

}  // namespace chat::hub
