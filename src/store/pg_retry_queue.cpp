#include "store/pg_retry_queue.hpp"

#include <algorithm>
#include <utility>

#include "log/log.hpp"
#include "store/message_store.hpp"

namespace chat::store::pg {

using boost::system::error_code;

RetryQueue::RetryQueue(const ConnectParams& params, std::size_t limit, std::function<void()> on_written)
    : params_(params), limit_(std::max<std::size_t>(limit, 1)), on_written_(std::move(on_written)),
      thread_([this] { run(); }) {}

RetryQueue::~RetryQueue() { stop(); }

void RetryQueue::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool RetryQueue::empty() const {
  std::lock_guard lock(mu_);
  return queue_.empty();
}

error_code RetryQueue::defer(Attempt attempt, const std::string& message_id) {
  std::size_t queued;
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= limit_) {
      log::error("store_retry_queue_full", {{"message_id", message_id}, {"limit", limit_}});
      return Errc::unavailable;
    }
    queue_.push_back({std::move(attempt), message_id});
    queued = queue_.size();
  }
  cv_.notify_one();
  log::warn("store_write_deferred", {{"message_id", message_id}, {"queued", queued}});
  return {};
}

// Writes deferred replies oldest first on a connection of its own, so the pool
// keeps serving reads meanwhile. An entry leaves the queue only once written
// (or refused for good), which is what flush() waits for.
void RetryQueue::run() {
  Link link(params_, nullptr);
  auto backoff = kMinBackoff;
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    Deferred entry = queue_.front();
    lock.unlock();
    auto ec = link.run(entry.attempt);
    lock.lock();
    if (ec == Errc::unavailable) {
      if (stopping_) return drop_all(lock);
      cv_.wait_for(lock, backoff, [&] { return stopping_; });
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    backoff = kMinBackoff;
    queue_.pop_front();
    log_retried(entry.message_id, ec);
    // Outages are rare: hold the extra connection only while there is a backlog.
    if (queue_.empty()) link.close();
    lock.unlock();
    on_written_();
    lock.lock();
  }
}

void RetryQueue::log_retried(const std::string& message_id, error_code ec) {
  if (ec) {
    log::error("store_deferred_write_failed", {{"message_id", message_id}, {"error", ec.message()}});
  } else {
    log::info("store_deferred_write_done", {{"message_id", message_id}});
  }
}

// Shutting down with the server still away: these replies are lost; say which.
void RetryQueue::drop_all(std::unique_lock<std::mutex>& lock) {
  std::deque<Deferred> lost;
  lost.swap(queue_);
  lock.unlock();
  for (const auto& entry : lost) log::error("store_retry_dropped", {{"message_id", entry.message_id}});
}

}  // namespace chat::store::pg
