#pragma once
// PostgresStore's retry queue: assistant replies whose write found the server
// down wait here, in order, and a thread with a connection of its own writes
// them once it is back (see postgres_store.hpp, Outage and assistant replies).

#include <boost/system/error_code.hpp>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "store/pg_link.hpp"

namespace chat::store::pg {

class RetryQueue {
 public:
  // `on_written` runs on the retry thread, without the queue's lock, each time a
  // reply has left the queue (written, or refused for good): flush() waiters may
  // be done.
  RetryQueue(const ConnectParams& params, std::size_t limit, std::function<void()> on_written);
  // stop().
  ~RetryQueue();
  RetryQueue(const RetryQueue&) = delete;
  RetryQueue& operator=(const RetryQueue&) = delete;

  // Queues the reply's write. Errc::unavailable when the queue is full (logged).
  boost::system::error_code defer(Attempt attempt, const std::string& message_id);
  bool empty() const;
  // Gives the queued replies a last try while the server answers, logs those it
  // must drop (store_retry_dropped), and joins the thread. Idempotent.
  void stop();

 private:
  struct Deferred {
    Attempt attempt;
    std::string message_id;
  };

  void run();
  void drop_all(std::unique_lock<std::mutex>& lock);
  static void log_retried(const std::string& message_id, boost::system::error_code ec);

  const ConnectParams& params_;
  const std::size_t limit_;
  const std::function<void()> on_written_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::deque<Deferred> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace chat::store::pg
