#include "worker/replay_log.hpp"

#include <algorithm>

namespace chat::worker {

ReplayLog::Reply& ReplayLog::reply_locked(const std::string& session_id, const std::string& message_id) {
  auto& replies = sessions_[session_id];
  for (auto& r : replies)
    if (r.message_id == message_id) return r;
  replies.push_back(Reply{message_id, {}, false, false, {}});
  return replies.back();
}

void ReplayLog::record(const std::string& session_id, const std::string& message_id, std::string payload, bool broadcast) {
  std::lock_guard lock(mutex_);
  auto& r = reply_locked(session_id, message_id);
  bytes_ += payload.size();
  r.payloads.push_back(std::move(payload));
  r.any_broadcast = r.any_broadcast || broadcast;
}

void ReplayLog::finish(const std::string& session_id, const std::string& message_id) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  auto& r = reply_locked(session_id, message_id);
  r.finished = true;
  r.finished_at = now;
  finished_order_.emplace_back(session_id, message_id);
  prune_locked(now);
}

void ReplayLog::replay(const std::string& session_id, const std::string& message_id,
                       const std::function<void(const std::string&)>& send) {
  std::vector<std::string> out;
  {
    std::lock_guard lock(mutex_);
    prune_locked(std::chrono::steady_clock::now());
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return;
    for (const auto& r : it->second) {
      bool wanted = message_id.empty() ? (!r.finished || r.any_broadcast) : r.message_id == message_id;
      if (wanted) out.insert(out.end(), r.payloads.begin(), r.payloads.end());
    }
  }
  for (const auto& p : out) send(p);
}

void ReplayLog::prune_locked(std::chrono::steady_clock::time_point now) {
  // Finished replies leave in the order they finished: when they are too old, or
  // when the log is over its size bound. Running replies are never dropped.
  while (!finished_order_.empty()) {
    const auto& [session_id, message_id] = finished_order_.front();
    auto sit = sessions_.find(session_id);
    if (sit == sessions_.end()) {
      finished_order_.pop_front();
      continue;
    }
    auto& replies = sit->second;
    auto rit = std::find_if(replies.begin(), replies.end(), [&](const Reply& r) { return r.message_id == message_id; });
    if (rit == replies.end()) {
      finished_order_.pop_front();
      continue;
    }
    if (now - rit->finished_at < retention_ && bytes_ <= max_bytes_) break;
    for (const auto& p : rit->payloads) bytes_ -= p.size();
    replies.erase(rit);
    if (replies.empty()) sessions_.erase(sit);
    finished_order_.pop_front();
  }
}

}  // namespace chat::worker
