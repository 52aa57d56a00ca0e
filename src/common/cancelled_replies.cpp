#include "common/cancelled_replies.hpp"

namespace chat {

void CancelledReplies::remember(const std::string& message_id, std::string user_id, std::string session_id,
                                Clock::time_point now) {
  forget_older_than(now - keep_);
  auto [it, fresh] = by_id_.try_emplace(message_id, Entry{std::move(user_id), std::move(session_id), now});
  if (!fresh) return;  // cancelled twice while running: the first time counts
  order_.push_back(message_id);
  if (order_.size() > max_entries_) {
    by_id_.erase(order_.front());
    order_.pop_front();
  }
}

const CancelledReplies::Entry* CancelledReplies::find(const std::string& message_id, Clock::time_point now) {
  forget_older_than(now - keep_);
  auto it = by_id_.find(message_id);
  return it == by_id_.end() ? nullptr : &it->second;
}

void CancelledReplies::forget_older_than(Clock::time_point cutoff) {
  while (!order_.empty()) {
    auto it = by_id_.find(order_.front());
    if (it->second.at > cutoff) return;
    by_id_.erase(it);
    order_.pop_front();
  }
}

}  // namespace chat
