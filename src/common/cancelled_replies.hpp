#pragma once
// Replies cancelled here (by a worker, or by the pod that accepted a reply no
// worker had started), kept a while so that a cancel sent again (a client
// retrying after its first answer was lost) gets the same answer as the first
// instead of the silence, and so the 404, of a reply nobody runs. Bounded in
// time and in count; not thread-safe (its owner's mutex guards it).

#include <chrono>
#include <cstddef>
#include <deque>
#include <string>
#include <unordered_map>

namespace chat {

class CancelledReplies {
 public:
  using Clock = std::chrono::steady_clock;

  CancelledReplies(Clock::duration keep, std::size_t max_entries) : keep_(keep), max_entries_(max_entries) {}

  struct Entry {
    std::string user_id;
    std::string session_id;
    Clock::time_point at;
  };

  void remember(const std::string& message_id, std::string user_id, std::string session_id,
                Clock::time_point now = Clock::now());
  // The reply `message_id` if it was cancelled within `keep`; null if not.
  const Entry* find(const std::string& message_id, Clock::time_point now = Clock::now());
  std::size_t size() const { return by_id_.size(); }

 private:
  void forget_older_than(Clock::time_point cutoff);

  Clock::duration keep_;
  std::size_t max_entries_;
  std::unordered_map<std::string, Entry> by_id_;
  std::deque<std::string> order_;  // oldest first; an id appears once
};

}  // namespace chat
