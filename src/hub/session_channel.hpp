#pragma once
// One session on one pod: its open streams and the frames of its recent replies.
// A reply's frames are kept while it streams (a stream that opens late gets it
// from chunk 0) and for a while after it finished (a stream that reconnects with
// Last-Event-ID resumes where it stopped). Owned by one hub shard; not
// thread-safe on its own.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.hpp"
#include "sse/event_sink.hpp"
#include "sse/resume_cursor.hpp"

namespace chat::hub {

using sse::ResumeCursor;

inline constexpr std::int64_t kNotAChunk = -1;  // error/complete frames

struct Backlog {
  std::string message_id;
  std::vector<std::pair<std::int64_t, sse::Frame>> frames;  // (chunk id or kNotAChunk, frame)
  std::size_t bytes = 0;
  bool overflowed = false;
  bool seen_live = false;  // some connection got it as it streamed
  bool finished = false;
  SteadyTime finished_at{};
};

struct Member {
  std::shared_ptr<sse::EventSink> connection;
  // A resumed stream already has these chunks; a replay must not repeat them.
  std::string skip_message;
  std::int64_t skip_through = kNotAChunk;
};

// What a stream that opens now should be sent first.
struct JoinPlan {
  std::vector<sse::Frame> frames;
  bool reset = false;  // the cursor is known but can no longer be served
};

class Channel {
 public:
  Backlog& backlog(const std::string& message_id);
  Backlog* find(const std::string& message_id);

  // Keeps the frame (within `max_frames` per reply) and sends it to every member
  // that does not have it yet. Returns the bytes the backlog grew by.
  std::size_t publish(const std::string& message_id, std::int64_t chunk_id, const sse::Frame& frame,
                      std::size_t max_frames);

  JoinPlan plan_join(const std::optional<ResumeCursor>& cursor, SteadyTime now, std::chrono::milliseconds late_join_window);
  void add(Member m) { members_.push_back(std::move(m)); }
  bool remove(const std::shared_ptr<sse::EventSink>& c);

  // Marks a reply finished; returns it.
  Backlog* finish(const std::string& message_id, SteadyTime now);
  // Drops finished replies the predicate selects; returns the bytes freed.
  template <class Pred>
  std::size_t drop_finished_if(Pred pred);

  // Drops one reply's frames; returns the bytes freed.
  std::size_t drop(const std::string& message_id) {
    return drop_if([&](const Backlog& b) { return b.message_id == message_id; });
  }

  // Drops every reply's frames (the session was deleted); returns the bytes freed.
  std::size_t drop_backlogs();

  const std::vector<Member>& members() const { return members_; }
  bool has_members() const { return !members_.empty(); }
  bool idle() const { return members_.empty() && backlogs_.empty(); }

 private:
  template <class Pred>
  std::size_t drop_if(Pred pred);

  std::vector<Member> members_;
  std::vector<Backlog> backlogs_;  // in the order the replies started
};

template <class Pred>
std::size_t Channel::drop_if(Pred pred) {
  std::size_t freed = 0;
  std::erase_if(backlogs_, [&](const Backlog& b) {
    if (!pred(b)) return false;
    freed += b.bytes;
    return true;
  });
  return freed;
}

template <class Pred>
std::size_t Channel::drop_finished_if(Pred pred) {
  return drop_if([&](const Backlog& b) { return b.finished && pred(b); });
}

}  // namespace chat::hub
