#include "buffer/accepted_replies.hpp"

namespace chat::buffer {

void AcceptedReplies::add(const std::string& message_id, const std::string& session_id, SteadyTime now) {
  std::lock_guard lock(mutex_);
  replies_.try_emplace(message_id, session_id, now);
}

void AcceptedReplies::remove(const std::string& message_id) {
  std::lock_guard lock(mutex_);
  replies_.erase(message_id);
}

std::optional<std::string> AcceptedReplies::session_of(const std::string& message_id) const {
  std::lock_guard lock(mutex_);
  auto it = replies_.find(message_id);
  if (it == replies_.end()) return std::nullopt;
  return it->second.first;
}

void AcceptedReplies::forget_before(SteadyTime cutoff) {
  std::lock_guard lock(mutex_);
  std::erase_if(replies_, [cutoff](const auto& kv) { return kv.second.second < cutoff; });
}

}  // namespace chat::buffer
