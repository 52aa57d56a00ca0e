#pragma once
// Reorders the chunks of one message (docs/API.md#buffering). Pure logic on an injected
// clock: no threads, no I/O. A chunk is released as soon as every lower id was
// released; duplicates are dropped (first copy wins); a gap that outlives the
// missing-chunk timeout is skipped so the stream goes on.

#include <boost/intrusive/list_hook.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/time.hpp"
#include "protocol/messages.hpp"

namespace chat::buffer {

// no_room: it would wait out of its turn, and the caller said there is no
// memory for that.
enum class PushResult { released_or_held, duplicate, after_final, over_limit, no_room, too_large };

class MessageBuffer {
 public:
  MessageBuffer(std::string session_id, std::string message_id, SteadyTime now);

  // Appends to `released` every chunk that became deliverable, in id order.
  // Without `may_hold`, a chunk that would wait for an earlier one is refused
  // (the one that is due is always taken: it releases what waits).
  // A chunk that would take what this attempt's kept chunks came with past
  // `max_bytes` is refused (too_large).
  PushResult push(protocol::ResponseChunk chunk, SteadyTime now, std::size_t max_chunks, std::size_t max_bytes,
                  std::vector<protocol::ResponseChunk>& released, bool may_hold = true);

  // When a gap has blocked later chunks for longer than `timeout`, gives up on
  // the missing ids (returned) and releases what follows them.
  std::vector<std::uint32_t> skip_expired_gap(SteadyTime now, std::chrono::milliseconds timeout,
                                              std::vector<protocol::ResponseChunk>& released);

  // A newer attempt of the reply replaces everything received of the older one.
  void restart(std::uint32_t attempt, SteadyTime now);
  std::uint32_t attempt() const { return attempt_; }

  bool finished() const { return final_id_ && next_id_ > *final_id_; }
  const std::string& session_id() const { return session_id_; }
  const std::string& message_id() const { return message_id_; }
  SteadyTime created() const { return created_; }
  SteadyTime last_activity() const { return last_activity_; }
  bool received_any() const { return next_id_ > 0 || !held_.empty(); }
  // When later chunks started waiting for a missing one (nullopt: no gap).
  std::optional<SteadyTime> gap_since() const { return gap_since_; }
  // Since when the reply has been waiting for its next chunk: the start of its
  // gap, else its last chunk (the next ones, the final one included, may have
  // gone elsewhere: no later chunk will ever show a gap); nullopt before the
  // first chunk and once finished.
  std::optional<SteadyTime> waiting_since() const {
    if (!received_any() || finished()) return std::nullopt;
    return gap_since_ ? gap_since_ : std::optional<SteadyTime>(last_activity_);
  }
  // The last time the pod asked the workers to send this message again, and
  // how often it has asked since the last chunk came.
  std::optional<SteadyTime> replay_requested_at;
  std::uint32_t replays_requested = 0;
  // The wait (its start) that streams were last told about.
  std::optional<SteadyTime> delay_noticed_for;
  // The chunk the reply waits for.
  std::uint32_t next_id() const { return next_id_; }
  // When this pod accepted the message (its POST): it owes the store its
  // reply, whoever watches.
  std::optional<SteadyTime> accepted_at;
  bool accepted_here() const { return accepted_at.has_value(); }
  // Whose chat it answers (accepted here; empty when the caller did not say).
  std::string asked_by;
  // Its place in its manager's order of activity (least recent first); it
  // leaves that list by itself when the buffer goes.
  boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>> by_activity;

  // What the released chunks add up to, for the stored message.
  const std::string& content() const { return content_; }
  // Bytes it holds: the reply text released (for the store), and the chunks
  // waiting for their turn and the final one as they came.
  std::size_t footprint() const { return content_.size() + held_bytes_ + final_bytes_; }
  std::size_t content_chunks() const { return content_chunks_; }
  const std::vector<std::uint32_t>& skipped_ids() const { return skipped_; }
  const std::optional<protocol::ResponseChunk>& final_chunk() const { return final_chunk_; }

 private:
  void release_ready(std::vector<protocol::ResponseChunk>& released);
  void record(const protocol::ResponseChunk& c);

  std::string session_id_;
  std::string message_id_;
  SteadyTime created_;
  SteadyTime last_activity_;
  std::optional<SteadyTime> gap_since_;  // when later chunks first waited on a missing one
  std::uint32_t attempt_ = 0;            // 0: no chunk yet
  std::uint32_t next_id_ = 0;
  std::optional<std::uint32_t> final_id_;
  std::map<std::uint32_t, protocol::ResponseChunk> held_;
  std::size_t held_bytes_ = 0;  // of the chunks in held_ (bytes_of)
  std::size_t taken_bytes_ = 0;  // of every chunk of this attempt kept (bytes_of)
  std::string content_;
  std::size_t content_chunks_ = 0;
  std::vector<std::uint32_t> skipped_;
  std::optional<protocol::ResponseChunk> final_chunk_;
  std::size_t final_bytes_ = 0;
};

}  // namespace chat::buffer
