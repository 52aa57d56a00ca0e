#include "buffer/reply_sessions.hpp"

namespace chat::buffer {

void ReplySessions::accept(const std::string& message_id, const std::string& session_id, SteadyTime now) {
  std::lock_guard lock(mutex_);
  replies_.insert_or_assign(message_id, Entry{session_id, now, true});
}

std::string ReplySessions::claim(const std::string& message_id, const std::string& session_id, SteadyTime now) {
  std::lock_guard lock(mutex_);
  auto [it, fresh] = replies_.try_emplace(message_id, Entry{session_id, now, false});
  if (fresh) {
    unaccepted_order_.push_back(message_id);
    keep_bounded();
    // keep_bounded pushes out the oldest: never the entry just made.
    return session_id;
  }
  return it->second.session_id;
}

void ReplySessions::ended(const std::string& message_id, SteadyTime now) {
  std::lock_guard lock(mutex_);
  auto it = replies_.find(message_id);
  if (it == replies_.end() || !it->second.running_here) return;
  it->second.running_here = false;
  it->second.at = now;
  unaccepted_order_.push_back(message_id);
  keep_bounded();
}

void ReplySessions::remove(const std::string& message_id) {
  std::lock_guard lock(mutex_);
  replies_.erase(message_id);
}

void ReplySessions::forget_before(SteadyTime cutoff) {
  std::lock_guard lock(mutex_);
  std::erase_if(replies_, [cutoff](const auto& kv) { return kv.second.at < cutoff; });
  while (!unaccepted_order_.empty() && !replies_.contains(unaccepted_order_.front())) unaccepted_order_.pop_front();
}

std::size_t ReplySessions::size() const {
  std::lock_guard lock(mutex_);
  return replies_.size();
}

void ReplySessions::keep_bounded() {
  while (unaccepted_order_.size() > kUnacceptedKept) {
    auto it = replies_.find(unaccepted_order_.front());
    if (it != replies_.end() && !it->second.running_here) replies_.erase(it);
    unaccepted_order_.pop_front();
  }
}

}  // namespace chat::buffer
