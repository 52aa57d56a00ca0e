#pragma once
// All message buffers of one shard, with the limits of docs/API.md#buffering. Pure logic
// on an injected clock; the caller owns the thread (one strand per shard).

#include <boost/intrusive/list.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "buffer/reply_sessions.hpp"
#include "buffer/message_buffer.hpp"
#include "buffer/recent_ids.hpp"
#include "metrics/metrics.hpp"

namespace chat::buffer {

struct Limits {
  std::size_t max_buffers = 10'000;
  std::size_t max_chunks = 10'000;
  std::chrono::milliseconds max_age{300'000};
  std::chrono::milliseconds missing_chunk_timeout{30'000};
  // One reply's text and waiting chunks: a worker cannot fill the pod with one.
  std::size_t max_reply_bytes = 8u << 20;
};

enum class MessageStatus { complete, error, cancelled, incomplete };
std::string_view to_string(MessageStatus s);

// A message whose buffer is done: everything needed to store it once.
struct FinishedMessage {
  std::string session_id;
  std::string message_id;
  std::string content;
  MessageStatus status = MessageStatus::complete;
  std::int64_t token_count = 0;
  std::string finish_reason;
  std::string model;
  std::string correlation_id;
  std::vector<std::uint32_t> missing_chunks;
  std::string error_code;  // set when status is error/incomplete
  std::string error_message;
  std::chrono::milliseconds duration{0};
  // False for a reply another pod accepted, evicted here: that pod stores it
  // whole, and the store keeps the first row written, so this pod's cut-short
  // copy must not race it. Its streams still see it end.
  bool stored_here = true;
  // The worker's final chunk came. Without it the reply was ended here (too
  // large, too old, evicted) while its worker may still be generating it.
  bool final_received = false;
  // Ended here before any chunk of it came (cancelled, or given up): its
  // request may still wait in the work queue.
  bool unstarted = false;
  // Whose chat it answers, for a reply accepted here (see expect()).
  std::string asked_by;
};

// What the caller must do, in order.
struct ChunkReady { protocol::ResponseChunk chunk; };
struct ChunksMissing { std::string session_id; std::string message_id; std::vector<std::uint32_t> ids; };
struct MessageFinished { FinishedMessage message; };
// A newer attempt of the reply started over: what streams showed of the older
// one is void; the new attempt follows from chunk 0.
struct ReplyRestarted { std::string session_id; std::string message_id; std::uint32_t attempt; };
// A reply accepted here sent no chunk within max_age: its empty buffer went,
// nothing is stored yet (a first chunk that still comes is this pod's).
struct ReplySilent { std::string session_id; std::string message_id; };
// Another pod's reply, unfinished, that nobody here watched any more went at
// max_age: what is kept of it for streams must go too (that pod stores it).
struct ReplyAbandoned { std::string session_id; std::string message_id; };
// A chunk named another session than its reply's (accepted for, or first
// seen with): dropped.
struct WrongSession { std::string session_id; std::string message_id; std::string reply_session_id; };
using Event =
    std::variant<ChunkReady, ChunksMissing, MessageFinished, ReplyRestarted, ReplySilent, ReplyAbandoned, WrongSession>;

// Written by the owning shard only; read by metrics scrapes on any thread.
struct Counters {
  metrics::Counter chunks_received;
  metrics::Counter chunks_released;
  metrics::Counter chunks_reordered;     // arrived ahead of their turn and were held
  metrics::Counter duplicates_dropped;
  metrics::Counter late_dropped;         // after the message finished
  metrics::Counter over_limit_dropped;   // past BUFFER_MAX_CHUNKS, or BUFFER_MAX_REPLY_BYTES (the reply ends)
  // Another pod's reply: every buffer taken by replies accepted here, no
  // memory to spare, or a newer attempt's chunk this buffer could not hold.
  metrics::Counter no_room_dropped;
  metrics::Counter chunks_skipped;       // given up after the missing-chunk timeout
  metrics::Counter buffers_evicted;      // BUFFER_MAX_BUFFERS reached
  metrics::Counter buffers_expired;      // BUFFER_MAX_AGE reached
  metrics::Counter never_arrived;        // expected replies that sent no chunk here
  metrics::Counter buffers_abandoned;    // another pod's reply, nobody here watching any more
  metrics::Counter replays_requested;
  metrics::Counter stale_attempts_dropped;  // chunks of an attempt a newer one replaced
  metrics::Counter wrong_session_dropped;   // naming another session than their reply's
  metrics::Counter replies_restarted;
};


// A user's cancel of a reply, as the pod that accepted it sees it.
enum class CancelResult {
  not_held,    // not accepted here, or a chunk of it came: its worker answers
  other_user,  // accepted here for another user's chat: nothing happens
  cancelled,   // accepted here, no chunk yet: ended here (MessageFinished, cancelled)
};

class BufferManager {
 public:
  explicit BufferManager(Limits limits)
      : limits_(limits), finished_(limits.max_buffers * 4), accepted_silent_(limits.max_buffers) {}

  // Without `memory_to_spare` (the pod's reply memory is spent), another pod's
  // reply opens no buffer and holds no chunk out of its turn here (that pod
  // stores it whole); replies accepted here keep every chunk. `pod_sessions`:
  // whose each reply of the whole pod is (other managers hold the buffers of
  // other sessions): a chunk that would open a buffer here for a reply of
  // another session is refused, and one of a reply new to the pod claims it.
  void push(protocol::ResponseChunk chunk, SteadyTime now, std::vector<Event>& out, bool memory_to_spare = true,
            ReplySessions* pod_sessions = nullptr);

  // Opens a buffer before the first chunk, so a pod keeps a message it accepted
  // for `asked_by`'s chat (kept with it until it finishes: a reply ended here
  // early is stopped at its worker in that user's name). Making room may
  // finish the least recently active buffer, another pod's first (reported in
  // `out`).
  void expect(const std::string& session_id, const std::string& message_id, SteadyTime now, std::vector<Event>& out,
              const std::string& asked_by = {});
  bool has(const std::string& message_id) const { return buffers_.contains(message_id); }
  // When this pod accepted the message (nullopt: not accepted here, or no buffer).
  std::optional<SteadyTime> accepted_at(const std::string& message_id) const;
  // Finished here recently and handed to the store (or its session was
  // deleted): nothing of it is left to store. A reply finished here without
  // being stored (another pod's, evicted or abandoned) is not: if the pod that
  // accepted it is gone, a copy read from the log is the one to store.
  bool stored_here(const std::string& message_id) const {
    const bool* stored = finished_.find(message_id);
    return stored && *stored;
  }
  // A finished reply read from the log was handed to the store: once is enough.
  void stored_from_log(const std::string& message_id, SteadyTime now);
  // Buffers the reply, or accepted it and still waits for its first chunk
  // (its empty buffer went at max_age).
  bool expects(const std::string& message_id) const {
    return buffers_.contains(message_id) || accepted_silent_.contains(message_id);
  }

  // The user who asked for a reply accepted here cancels it before any chunk
  // came (it waits in the work queue, or no worker is there): it ends now,
  // empty and cancelled, and is stored so. The workers have the same cancel
  // and end the request, should one take it later, without running it.
  CancelResult cancel_unstarted(const std::string& message_id, const std::string& user_id, SteadyTime now,
                                std::vector<Event>& out);

  // Missing-chunk timeouts (cheap; call often).
  void check_gaps(SteadyTime now, std::vector<Event>& out);
  // Age-based cleanup: buffers older than max_age finish as incomplete. Dropped
  // quietly instead: an expected reply that never sent a chunk here (another pod
  // had it, or it waits in the work queue: a reply accepted here ends, empty and
  // incomplete, after another max_age without a chunk), and another pod's reply
  // whose session nobody here watches any more (the pod that accepted it stores it).
  void expire_old(SteadyTime now, std::vector<Event>& out, const std::function<bool(const std::string&)>& watched);

  // Sessions with a message whose gap is older than `after` — or, where a
  // stream or the store depends on it (`watched(session)`, or accepted here),
  // a message with no new chunk for `after`: none yet, or none after the last
  // one (its tail may have gone elsewhere, and no later chunk will show a gap);
  // where only `watched` holds for an expected message with no chunk yet — at
  // most once per `every` per message: the pod asks the workers (or the log)
  // to send them again (the routing cache may still point at the pod a client
  // just left). Returns (session id, message id) pairs.
  std::vector<std::pair<std::string, std::string>> stalled(
      SteadyTime now, std::chrono::milliseconds after, std::chrono::milliseconds every,
      const std::function<bool(const std::string& session_id)>& watched);

  // What was sent meanwhile may be lost (the bus lost its server): the next
  // stalled() asks about every waiting reply at once, its back-off started over.
  void ask_again_now();

  // A watched reply that has waited `after` for its next chunk (a gap, no
  // chunk after the last one, or nothing at all yet): reported once per wait,
  // so streams can say so at once instead of going silent until the
  // missing-chunk timeout or the buffer's age limit.
  struct Delay {
    std::string session_id;
    std::string message_id;
    std::uint32_t next_chunk_id;
    std::chrono::milliseconds waited;
  };
  std::vector<Delay> newly_delayed(SteadyTime now, std::chrono::milliseconds after,
                                   const std::function<bool(const std::string& session_id)>& watched);

  // Drops one buffer without finishing it (its request never went out).
  void drop(const std::string& message_id);

  // Drops every buffer of a session (it was deleted), and forgets its replies
  // accepted here that sent nothing yet; returns the message ids of both.
  std::vector<std::string> drop_session(const std::string& session_id, SteadyTime now);

  // The replies accepted here end now, as they are, incomplete with `reason`
  // (the pod shuts down, and the generations die with it). Returns how many.
  std::size_t finish_accepted(SteadyTime now, std::vector<Event>& out, const char* reason);

  // Buffers that received at least one chunk.
  std::size_t streaming() const { return streaming_; }
  // Buffers something depends on: accepted here (the store waits for them) or
  // of a session `watched` here (a stream waits for them). Shutdown waits for
  // these and no others.
  std::size_t owed(const std::function<bool(const std::string& session_id)>& watched) const;

  std::size_t size() const { return buffers_.size(); }
  // Buffers of replies accepted here. Only these count against max_buffers
  // for a new chat: another pod's reply is evicted first (that pod stores it).
  std::size_t accepted() const { return accepted_; }
  // Bytes of reply text the buffers hold (MessageBuffer::footprint, summed).
  std::size_t held_bytes() const { return held_bytes_; }
  const Counters& counters() const { return counters_; }

 private:
  using Buffers = std::unordered_map<std::string, MessageBuffer>;
  // Every buffer leaves through here, so held_bytes_ stays exact.
  Buffers::iterator erase(Buffers::iterator it);
  void release(std::vector<protocol::ResponseChunk>& released, std::vector<Event>& out);
  void finish(const std::string& message_id, SteadyTime now, std::vector<Event>& out, const char* reason,
              bool stored_here = true);
  // Makes room for one more buffer; false when `for_foreign` and every buffer
  // is a reply accepted here, which the newcomer must not push out.
  bool make_room(SteadyTime now, std::vector<Event>& out, bool for_foreign);
  void evict(Buffers::iterator it, SteadyTime now, std::vector<Event>& out);
  void mark_accepted(MessageBuffer& buffer, SteadyTime at, const std::string& asked_by);
  // An accepted reply whose buffer went at max_age with no chunk yet.
  struct Silent {
    SteadyTime accepted_at;
    std::string session_id;
    std::string asked_by;
  };
  void give_up_silent(const std::string& message_id, Silent silent, SteadyTime now, std::vector<Event>& out);
  // Ends a reply accepted here that no chunk reached: empty, stored.
  void end_unstarted(const std::string& message_id, Silent silent, SteadyTime now, std::vector<Event>& out,
                     MessageStatus status, std::string finish_reason, std::string error_code);
  // The buffer was just active (made, given a chunk, started over): it goes
  // to the back of its list.
  void touch(MessageBuffer& buffer);

  using ByActivity = boost::intrusive::list<
      MessageBuffer, boost::intrusive::member_hook<MessageBuffer, decltype(MessageBuffer::by_activity), &MessageBuffer::by_activity>,
      boost::intrusive::constant_time_size<false>>;

  Limits limits_;
  // Least recently active first, other pods' replies apart from those accepted
  // here: the buffer to evict is at a front, never looked for. Declared before
  // the buffers, which unlink themselves when they go.
  ByActivity foreign_by_activity_;
  ByActivity accepted_by_activity_;
  Buffers buffers_;
  std::size_t held_bytes_ = 0;
  std::size_t accepted_ = 0;  // buffers with accepted_here
  // Finished messages (-> stored here), so a late duplicate does not start a
  // new buffer.
  RecentIds<bool> finished_;
  // Accepted here, but dropped at max_age before any chunk came (a long wait
  // in the work queue): a first chunk that still comes is this pod's to store.
  // After another max_age it ends (give_up_silent).
  RecentIds<Silent> accepted_silent_;
  Counters counters_;
  std::size_t streaming_ = 0;  // buffers that received a chunk
  std::vector<protocol::ResponseChunk> scratch_;
};

}  // namespace chat::buffer
