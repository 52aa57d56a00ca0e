#pragma once
// One session on one pod: its open streams and the frames of its recent replies.
// A reply's frames are kept while it streams (a stream that opens late gets it
// from chunk 0) and for a while after it finished (a stream that reconnects with
// Last-Event-ID resumes where it stopped). Each stream remembers how far it got
// in each reply, so nothing reaches it twice, however a reply is fed again
// (replay, log catch-up). Owned by one hub shard; not thread-safe on its own.

#include <boost/container/flat_map.hpp>
#include <boost/container/small_vector.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/time.hpp"
#include "sse/event_sink.hpp"
#include "sse/resume_cursor.hpp"

namespace chat::hub {

using sse::ResumeCursor;

// Where a frame stands in its reply: a chunk id (0, 1, ...) or one of these.
inline constexpr std::int64_t kNotAChunk = -1;  // a notice about the reply (an error, a delay)
inline constexpr std::int64_t kReplyEnd = -2;   // message_complete: nothing of the reply follows
// Recorded for a reply a stream joined in its middle: none of its chunks go
// to that stream, its message_complete does (the client then reloads the
// history, which has the reply).
inline constexpr std::int64_t kChunksSkipped = std::numeric_limits<std::int64_t>::max();

struct Backlog {
  std::string message_id;
  std::vector<std::pair<std::int64_t, sse::Frame>> frames;  // (position, frame)
  std::size_t bytes = 0;
  bool overflowed = false;
  bool seen_live = false;  // some stream got it as it streamed
  bool finished = false;
  // A newer attempt replaced its frames: a client that comes back may have
  // seen part of an older one, and its cursor does not say which.
  bool restarted = false;
  SteadyTime finished_at{};
  // The channel's frame count when it began and at its latest frame: which
  // replies ran at the same time as another.
  std::uint64_t first_seq = 0;
  std::uint64_t last_seq = 0;
};

// A frame a catching-up stream will get once the log read is in.
struct HeldFrame {
  std::string message_id;
  std::int64_t position;
  sse::Frame frame;
  // The reset of a reply that started over: it goes before the new attempt's
  // frames, which the reply's backlog holds from chunk 0.
  bool restarts = false;
};

// What only a stream that came back with a cursor needs. Most streams never
// resume: they carry none of it, so an idle stream's entry stays small.
struct Resume {
  // While the stream catches up from the chunk log, live frames wait here,
  // up to a bound (Channel::publish's `max_frames`): a stream that would hold
  // more is closed instead (`cut`) and comes back with its cursor.
  bool catching_up = false;
  bool cut = false;
  std::vector<HeldFrame> held;
  // The replies running here when it began to catch up: their frames from
  // before it are in their backlogs only, also once they finished meanwhile.
  std::vector<std::string> running_at_start;
  // When it resumed, and the replies already settled for it (the cursor's,
  // those sent again from their start, those it had whole). Any other reply
  // made before the resume may have reached the client in part on its old pod,
  // and the cursor does not say how far: such a reply goes from its start,
  // after a reset. Unset once the client starts over from the history.
  std::optional<std::chrono::system_clock::time_point> resumed_at{};
  std::unordered_set<std::string> settled{};
};

// What a stream has been sent, and how it resumed. An idle stream that has had
// no reply yet carries none of it: its member holds a null pointer.
struct Progress {
  // Per reply: the last chunk id sent, or kReplyEnd once its end went out. A
  // stream follows a reply or two at a time: a sorted vector, which costs 24
  // bytes where a hash map costs 56.
  boost::container::flat_map<std::string, std::int64_t> sent;
  std::unique_ptr<Resume> resume;  // set when the stream resumed with a cursor
};

struct Member {
  std::shared_ptr<sse::EventSink> stream;
  std::unique_ptr<Progress> progress;  // see Progress; made on first use, freed once empty

  Resume* resume() const { return progress ? progress->resume.get() : nullptr; }
  Resume& start_resume();
  bool catching_up() const { return resume() && resume()->catching_up; }
  bool cut() const { return resume() && resume()->cut; }
  // Records `position` as the last one sent of the reply.
  void record(const std::string& message_id, std::int64_t position);
  // Forgets what was sent of the reply (it goes again from its start, or it is
  // gone); returns whether anything was.
  bool forget(const std::string& message_id);
  void forget_all();
  // Whether the frame is new to this stream; records it as sent if so.
  bool admit(const std::string& message_id, std::int64_t position);
  // Once per unsettled reply of a resumed stream: whether its first chunk
  // here (`position`, made at `origin`) must be preceded by a reset. If so the
  // reply starts over for this stream.
  bool needs_reset(const std::string& message_id, std::int64_t position, std::chrono::system_clock::time_point origin);
  // Whether the frame would begin a reply in its middle for a stream whose
  // client started over from the history (its resume failed). If so none of
  // that reply's chunks go to it (kChunksSkipped): its end tells the client to
  // look in the history, which has the reply once it is stored.
  bool joins_midway(const std::string& message_id, std::int64_t position);
  // admit(), after the reset needs_reset asks for, unless the frame joins
  // midway; appends what to send.
  void take(const std::string& message_id, std::int64_t position, const sse::Frame& frame,
            std::vector<sse::Frame>& out);

 private:
  Progress& progress_made();
  void free_if_empty();
};

// What Channel::publish did besides sending.
struct Published {
  std::size_t kept_bytes = 0;   // the reply's backlog grew by this much
  std::size_t streams_cut = 0;  // catching-up streams closed for holding too much
};

class Channel {
 public:
  Backlog& backlog(const std::string& message_id);
  Backlog* find(const std::string& message_id);

  // Keeps the frame (within `max_frames` per reply) and sends it to every
  // member that does not have it yet; a catching-up member holds at most
  // `max_frames` frames (past that it is cut).
  Published publish(const std::string& message_id, std::int64_t position, const sse::Frame& frame,
                    std::size_t max_frames);
  // Sends a frame to one member, unless it has it already, or holds it while
  // the member catches up. Returns whether the member was cut now.
  static bool deliver(Member& member, const std::string& message_id, std::int64_t position, const sse::Frame& frame,
                      std::size_t max_held);

  // Adds the member and sends it what it missed as one backlog burst: from
  // `cursor`, or without one the running replies and the finished ones nobody
  // saw (within `late_join_window`). A cursor names one reply only: every
  // other reply that ran at the same time as it or began after it may have
  // reached the client in part, so it goes again from its start, after
  // `from_start(message_id)` (a reset telling the client so). Returns false
  // when a reply to be sent can no longer be replayed (its frames overflowed).
  bool join(Member member, const std::optional<ResumeCursor>& cursor, SteadyTime now,
            std::chrono::milliseconds late_join_window,
            const std::function<sse::Frame(const std::string& message_id)>& from_start);
  // The message ids of the replies still running here.
  std::vector<std::string> running() const;
  // The frames that `member` does not have yet of the replies running here,
  // and of those in `also` (running when it began to catch up); for a reply
  // whose frames overflowed, none, and one reset `reply_too_long_to_replay`.
  void take_running(Member& member, const std::vector<std::string>& also, std::vector<sse::Frame>& burst);
  bool remove(const std::shared_ptr<sse::EventSink>& stream);
  Member* member(const std::string& stream_id);

  // A newer attempt of the reply started over: members that saw part of the
  // old one get `reset` and the reply again from chunk 0; its frames go.
  // Returns the bytes freed.
  std::size_t restart(const std::string& message_id, const sse::Frame& reset);

  // Marks a reply finished; returns it.
  Backlog* finish(const std::string& message_id, SteadyTime now);
  // Drops one reply's frames (members forget it too); returns the bytes freed.
  std::size_t drop(const std::string& message_id);
  // Drops every reply's frames (the session was deleted); returns the bytes freed.
  std::size_t drop_backlogs();

  // Most sessions have one stream: it lives inside the channel, with no block
  // of its own.
  using Members = boost::container::small_vector<Member, 1>;
  Members& members() { return members_; }
  const Members& members() const { return members_; }
  bool has_members() const { return !members_.empty(); }
  bool idle() const { return members_.empty() && !replies_; }

 private:
  // The replies kept, apart from the channel: most channels (a stream waiting
  // for its next message) have none and carry a null pointer. Freed when the
  // last one is dropped.
  struct Replies {
    std::vector<Backlog> backlogs;  // in the order the replies started
    std::uint64_t seq = 0;          // frames published, and replies begun
  };
  void free_replies_if_empty();
  static bool hold(Member& member, HeldFrame frame, std::size_t max_held);

  Members members_;
  std::unique_ptr<Replies> replies_;
};

}  // namespace chat::hub
