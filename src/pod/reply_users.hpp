#pragma once
// The user of each reply this pod accepted, kept until the reply is stored or
// its session deleted. A reply the pod ends before its worker did (too large,
// too old, evicted) is cancelled in that user's name: the worker stops only a
// cancel from the user who asked (the provider stops generating, and billing).
// Bounded: an entry goes after `keep_for` (a reply ends by then, BUFFER_MAX_AGE)
// or past kMaxReplies, the oldest first; a reply ended later than that is not
// cancelled (its worker's own limits end it).

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>

#include "buffer/recent_ids.hpp"

namespace chat::pod {

class ReplyUsers {
 public:
  static constexpr std::size_t kMaxReplies = 100'000;

  explicit ReplyUsers(std::chrono::milliseconds keep_for) : keep_for_(keep_for) {}

  void accepted(const std::string& message_id, const std::string& user_id);
  // The reply's user, forgotten (nullopt: not accepted here, or forgotten).
  std::optional<std::string> take(const std::string& message_id);

 private:
  std::chrono::milliseconds keep_for_;
  // Guards users_: POST handlers add, the hub's shards and the API's threads
  // take, once per reply each.
  std::mutex mutex_;
  buffer::RecentIds<std::string> users_{kMaxReplies};
};

}  // namespace chat::pod
