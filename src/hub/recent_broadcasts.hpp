#pragma once
// Broadcast chunks of sessions this pod does not hold, kept for a few seconds
// (bounded by time and bytes): a stream that opens just after a reply started
// still gets it from chunk 0 when its first chunks went to the broadcast
// subject, even from a worker that keeps no log (the seed's demo worker). Pure
// logic on an injected clock, owned by one shard.

#include <chrono>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/time.hpp"
#include "protocol/messages.hpp"

namespace chat::hub {

class RecentBroadcasts {
 public:
  RecentBroadcasts(std::chrono::milliseconds window, std::size_t max_bytes) : window_(window), max_bytes_(max_bytes) {}

  void keep(protocol::ResponseChunk chunk, SteadyTime now);
  // The session's kept chunks, in arrival order; they leave the cache.
  std::vector<protocol::ResponseChunk> take(const std::string& session_id, SteadyTime now);
  std::size_t bytes() const { return bytes_; }

 private:
  struct Kept {
    SteadyTime at;
    protocol::ResponseChunk chunk;
    std::size_t size;
  };
  void trim(SteadyTime now);

  std::chrono::milliseconds window_;
  std::size_t max_bytes_;
  std::deque<Kept> kept_;  // oldest first; taken ones leave a gap (empty session_id)
  std::unordered_map<std::string, std::size_t> per_session_;
  std::size_t bytes_ = 0;
};

}  // namespace chat::hub
