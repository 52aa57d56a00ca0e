#pragma once
// The chunks a worker has published, kept so a pod can ask for them again: a
// stream that opens on a pod after the reply started (late join), or a pod that
// missed chunks while the routing cache still pointed elsewhere.
//
// A running reply is always replayed. A finished one only if some of it went to
// the broadcast subject (nobody was watching then), and only for `retention`.
// Thread-safe: generations on many strands append, bus threads read.

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace chat::worker {

class ReplayLog {
 public:
  ReplayLog(std::chrono::milliseconds retention, std::size_t max_bytes) : retention_(retention), max_bytes_(max_bytes) {}

  void record(const std::string& session_id, const std::string& message_id, std::string payload, bool broadcast);
  void finish(const std::string& session_id, const std::string& message_id);

  // Calls `send` with every payload a pod should get again, in chunk order:
  // with `message_id` empty, the session's running replies (and finished ones
  // nobody watched); else that reply, finished or not.
  void replay(const std::string& session_id, const std::string& message_id,
              const std::function<void(const std::string&)>& send);

 private:
  struct Reply {
    std::string message_id;
    std::vector<std::string> payloads;
    bool any_broadcast = false;
    bool finished = false;
    std::chrono::steady_clock::time_point finished_at{};
  };
  Reply& reply_locked(const std::string& session_id, const std::string& message_id);
  void prune_locked(std::chrono::steady_clock::time_point now);

  std::chrono::milliseconds retention_;
  std::size_t max_bytes_;
  mutable std::mutex mutex_;  // guards everything below
  std::unordered_map<std::string, std::vector<Reply>> sessions_;
  std::deque<std::pair<std::string, std::string>> finished_order_;  // (session, message), oldest first
  std::size_t bytes_ = 0;
};

}  // namespace chat::worker
