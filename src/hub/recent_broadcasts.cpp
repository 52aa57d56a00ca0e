#include "hub/recent_broadcasts.hpp"

namespace chat::hub {
namespace {

std::size_t size_of(const protocol::ResponseChunk& c) {
  return sizeof(c) + c.chunk.size() + c.wire.size() + c.session_id.size() + c.message_id.size();
}

}  // namespace

void RecentBroadcasts::keep(protocol::ResponseChunk chunk, SteadyTime now) {
  if (window_.count() <= 0 || max_bytes_ == 0) return;
  auto size = size_of(chunk);
  bytes_ += size;
  ++per_session_[chunk.session_id];
  kept_.push_back(Kept{now, std::move(chunk), size});
  trim(now);
}

std::vector<protocol::ResponseChunk> RecentBroadcasts::take(const std::string& session_id, SteadyTime now) {
  trim(now);
  std::vector<protocol::ResponseChunk> out;
  auto it = per_session_.find(session_id);
  if (it == per_session_.end()) return out;
  per_session_.erase(it);
  for (auto& k : kept_) {
    if (k.chunk.session_id != session_id) continue;
    bytes_ -= k.size;
    k.size = 0;
    out.push_back(std::move(k.chunk));
    k.chunk.session_id.clear();
  }
  return out;
}

void RecentBroadcasts::trim(SteadyTime now) {
  while (!kept_.empty() && (bytes_ > max_bytes_ || now - kept_.front().at >= window_ || kept_.front().size == 0)) {
    auto& k = kept_.front();
    if (k.size != 0) {
      bytes_ -= k.size;
      if (--per_session_[k.chunk.session_id] == 0) per_session_.erase(k.chunk.session_id);
    }
    kept_.pop_front();
  }
}

}  // namespace chat::hub
