#include "pod/reply_users.hpp"

namespace chat::pod {

void ReplyUsers::accepted(const std::string& message_id, const std::string& user_id) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  users_.forget_before(now - keep_for_);
  users_.remember(message_id, now, user_id);
}

std::optional<std::string> ReplyUsers::take(const std::string& message_id) {
  std::lock_guard lock(mutex_);
  return users_.take(message_id);
}

}  // namespace chat::pod
