#pragma once
// The session of each reply this pod accepted, buffers, or ended lately. Each
// BufferManager (a hub shard) holds the buffers of its own sessions only, and
// a chunk goes to the shard of the session it names: a chunk naming another
// session than its reply's lands in a shard that knows nothing of that reply.
// This map, shared by them all, says whose the reply is, so no chunk moves a
// reply into another session's streams, during it or after it ended.

#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/time.hpp"

namespace chat::buffer {

class ReplySessions {
 public:
  // Ended replies kept at most: the oldest go.
  static constexpr std::size_t kEndedKept = 16'384;

  // Accepted here for `session_id`, before any chunk of it can come.
  void accept(const std::string& message_id, const std::string& session_id, SteadyTime now);
  // A buffer opens for the reply: the session it belongs to, the one it was
  // accepted for or first seen with; a reply new to the pod becomes
  // `session_id`'s. Kept until ended().
  std::string claim(const std::string& message_id, const std::string& session_id, SteadyTime now);
  // Its buffer here is gone: its session is still known for a while, for
  // late chunks.
  void ended(const std::string& message_id, SteadyTime now);
  // The session of a reply accepted, buffered or ended here lately.
  std::optional<std::string> session_of(const std::string& message_id) const;
  // Never was (a chat taken back before it reached a worker).
  void remove(const std::string& message_id);
  // Replies end by BUFFER_MAX_AGE (a silent one accepted here by twice that):
  // one older than `cutoff` is long gone, whichever way it ended.
  void forget_before(SteadyTime cutoff);
  std::size_t size() const;

 private:
  struct Entry {
    std::string session_id;
    SteadyTime at;         // accepted, claimed or ended
    bool running = true;   // accepted or buffered here, not ended: never pushed out
  };
  void keep_bounded();

  // Taken by the API's threads (accept) and the shards (the rest): a lookup,
  // an insert or a sweep, never held across anything else.
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> replies_;
  // Ended entries, oldest first, with the time they ended: an entry that began
  // again since (claimed anew) is not the one to push out.
  std::deque<std::pair<std::string, SteadyTime>> ended_order_;
};

}  // namespace chat::buffer
