#pragma once
// The replies this pod accepted, each with its session. A shard sees only the
// buffers of its own sessions, so a chunk naming another session for a reply
// accepted here lands in a shard that knows nothing of that reply: this map,
// shared by the shards, says it is not the chunk's session's.

#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/time.hpp"

namespace chat::hub {

class AcceptedReplies {
 public:
  void add(const std::string& message_id, const std::string& session_id, SteadyTime now);
  void remove(const std::string& message_id);
  // The session of a reply accepted here (nullopt: not one of them).
  std::optional<std::string> session_of(const std::string& message_id) const;
  // Replies end by BUFFER_MAX_AGE: one older than `cutoff` is long gone.
  void forget_before(SteadyTime cutoff);

 private:
  // Taken by the API's threads (add) and the shards (the rest): a lookup or an
  // insert, never held across anything else.
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::pair<std::string, SteadyTime>> replies_;
};

}  // namespace chat::hub
