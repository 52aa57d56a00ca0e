#include "buffer/reply_sessions.hpp"

namespace chat::buffer {

void ReplySessions::accept(const std::string& message_id, const std::string& session_id, SteadyTime now) {
  std::lock_guard lock(mutex_);
  replies_.insert_or_assign(message_id, Entry{session_id, now, true});
}

std::string ReplySessions::claim(const std::string& message_id, const std::string& session_id, SteadyTime now) {
  std::lock_guard lock(mutex_);
  auto [it, fresh] = replies_.try_emplace(message_id, Entry{session_id, now, true});
  if (!fresh && it->second.session_id == session_id) {
    // Its buffer opens (again: a reply accepted here whose first chunk comes
    // late): it runs from now.
    it->second.running = true;
    it->second.at = now;
  }
  return it->second.session_id;
}

void ReplySessions::ended(const std::string& message_id, SteadyTime now) {
  std::lock_guard lock(mutex_);
  auto it = replies_.find(message_id);
  if (it == replies_.end() || !it->second.running) return;
  it->second.running = false;
  it->second.at = now;
  ended_order_.emplace_back(message_id, now);
  keep_bounded();
}

std::optional<std::string> ReplySessions::session_of(const std::string& message_id) const {
  std::lock_guard lock(mutex_);
  auto it = replies_.find(message_id);
  if (it == replies_.end()) return std::nullopt;
  return it->second.session_id;
}

void ReplySessions::remove(const std::string& message_id) {
  std::lock_guard lock(mutex_);
  replies_.erase(message_id);
}

void ReplySessions::forget_before(SteadyTime cutoff) {
  std::lock_guard lock(mutex_);
  std::erase_if(replies_, [cutoff](const auto& kv) { return kv.second.at < cutoff; });
  std::erase_if(ended_order_, [cutoff](const auto& e) { return e.second < cutoff; });
}

std::size_t ReplySessions::size() const {
  std::lock_guard lock(mutex_);
  return replies_.size();
}

void ReplySessions::keep_bounded() {
  while (ended_order_.size() > kEndedKept) {
    const auto& [id, ended_at] = ended_order_.front();
    if (auto it = replies_.find(id); it != replies_.end() && !it->second.running && it->second.at == ended_at)
      replies_.erase(it);
    ended_order_.pop_front();
  }
}

}  // namespace chat::buffer
