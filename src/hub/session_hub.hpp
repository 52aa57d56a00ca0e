#pragma once
// The pod's sessions, sharded by session id. Each shard (see session_shard.hpp)
// owns its sessions outright and runs one run at a time, on its own strand (or,
// for a burst of chunks from the bus, on the delivery thread when the shard is
// idle, see on_chunks): every chunk, attach and detach of a session runs there
// in the order handed over, so a session's frames reach all its streams in one
// order, and a frame is encoded once per session and shared by its streams.
// The hub hands work to the right shard and drives each shard's timers.
//
// Every method may be called from any thread and returns at once.

#include <boost/asio/io_context.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hub/hub_options.hpp"
#include "hub/session_shard.hpp"

namespace chat::hub {

struct HubStats {
  std::size_t streams = 0;
  std::size_t sessions = 0;  // sessions with at least one stream
  std::size_t buffers = 0;
  std::size_t reply_bytes = 0;  // counted against HubOptions::reply_memory_budget
};

class SessionHub {
 public:
  // The handlers run where the shards run (their strands, or the bus's delivery
  // thread), several at once: they must be thread-safe.
  SessionHub(boost::asio::io_context& ioc, HubOptions options, ShardHandlers handlers, Clock clock = SteadyClock);
  ~SessionHub();

  void start();

  // See SessionShard::attach.
  void attach(std::shared_ptr<sse::EventSink> stream, std::optional<sse::ResumeCursor> cursor = std::nullopt,
              SteadyTime owner_checked_at = SteadyTime::max());
  void detach(std::shared_ptr<sse::EventSink> stream);
  // Chunks from the bus that arrived together: one run per shard, each
  // session's chunks in the order given. With `caller_if_idle`, a shard that
  // no one runs and no run waits for takes them on the calling thread, which
  // then writes them to the streams' sockets itself: the bus's delivery thread
  // with nothing queued behind them wakes no event-loop thread per chunk (on
  // busy cores each wake-up is the bulk of a chunk's tail latency). The caller
  // must hold no lock that a shard's handlers take.
  enum class RunOn { strand, caller_if_idle };
  void on_chunks(std::vector<protocol::ResponseChunk> chunks, bool broadcast, RunOn where = RunOn::strand);
  // See SessionShard::expect.
  void expect(const std::string& session_id, const std::string& message_id, const std::string& asked_by = {});
  // What the chunk log answered (see SessionShard).
  void fill_from_log(const std::string& session_id, std::vector<protocol::ResponseChunk> chunks);
  void resume_from_log(const std::string& session_id, const std::string& stream_id, const sse::ResumeCursor& cursor,
                       std::optional<std::vector<protocol::ResponseChunk>> chunks);
  // Takes an expect() back: the request never reached the bus.
  void forget(const std::string& session_id, const std::string& message_id);
  // A user's cancel of a reply accepted here that no chunk reached yet (see
  // SessionShard::cancel_unstarted); `done` (on a shard strand, or here when
  // the pod knows no such reply) gets what happened and the reply's session.
  void cancel_unstarted(const std::string& message_id, const std::string& user_id,
                        std::function<void(buffer::CancelResult, const std::string& session_id)> done);
  // `on_dropped` (on a shard strand) gets the ids of the replies that were
  // still running for the session here.
  void end_session(const std::string& session_id, std::function<void(std::vector<std::string>)> on_dropped);

  // `done` runs once no shard holds a buffer that a stream or the store depends on.
  void when_settled(std::function<void()> done);
  // The replies accepted here end as they are, stored incomplete with
  // `reason` (SessionShard::finish_accepted); `done` gets how many.
  void finish_accepted(const char* reason, std::function<void(std::size_t)> done);
  // Every stream gets its `last()` frame and closes, and no new stream is
  // taken; `done` runs once all have left. Replies go on being reordered and
  // stored until stop().
  void close_all(std::function<sse::Frame()> last, std::function<void()> done);
  // Stops the shards' timers (the end of a drain).
  void stop();

  HubStats stats() const;
  // Whether the shard of `session_id` holds fewer buffers of replies accepted
  // here than its bound (BUFFER_MAX_BUFFERS). Another pod's reply makes room
  // (that pod stores it); past the bound a new reply would evict one accepted
  // here, cut short in the store: refusing the new chat loses less. Read from
  // the shard's gauge (any thread), so chats already on their way may still
  // pass it.
  bool has_room_for_reply(std::string_view session_id) const;
  // Every shard's counters and histograms, summed (any thread).
  void collect(metrics::Exposition& out) const;

  static SteadyTime SteadyClock() { return std::chrono::steady_clock::now(); }

 private:
  struct Slot;
  std::size_t slot_index(std::string_view session_id) const;
  Slot& slot_for(std::string_view session_id) { return *slots_[slot_index(session_id)]; }

  HubOptions options_;
  Clock clock_;
  buffer::ReplySessions reply_sessions_;  // shared by the shards
  std::vector<std::unique_ptr<Slot>> slots_;
};

}  // namespace chat::hub
