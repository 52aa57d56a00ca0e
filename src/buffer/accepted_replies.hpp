#pragma once
// The replies this pod accepted, each with its session. Each BufferManager (a
// hub shard) holds the buffers of its own sessions only, so a chunk naming
// another session for a reply accepted here lands in one that knows nothing
// of that reply: this map, shared by them all, says it is not that session's.

#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/time.hpp"

namespace chat::buffer {

class AcceptedReplies {
 public:
  void add(const std::string& message_id, const std::string& session_id, SteadyTime now);
  void remove(const std::string& message_id);
  // The session of a reply accepted here (nullopt: not one of them).
  std::optional<std::string> session_of(const std::string& message_id) const;
  // Replies end by BUFFER_MAX_AGE: one older than `cutoff` is long gone.
  void forget_before(SteadyTime cutoff);

 private:
  // Taken by the API's threads (add) and the shards (the rest): a lookup, an
  // insert or a sweep, never held across anything else.
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::pair<std::string, SteadyTime>> replies_;
};

}  // namespace chat::buffer
