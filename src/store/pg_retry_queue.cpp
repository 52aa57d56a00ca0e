#include "store/pg_retry_queue.hpp"

#include <algorithm>
#include <utility>

#include "log/log.hpp"
#include "store/pg_operations.hpp"
#include "store/store_detail.hpp"

namespace chat::store::pg {

using boost::system::error_code;

RetryQueue::RetryQueue(const ConnectParams& params, std::size_t limit, const std::filesystem::path& spill_dir,
                       std::function<void()> on_written)
    : params_(params),
      limit_(std::max<std::size_t>(limit, 1)),
      on_written_(std::move(on_written)),
      journal_(spill_dir) {}

RetryQueue::~RetryQueue() { stop(); }

void RetryQueue::start() { thread_ = std::thread([this] { run(); }); }

void RetryQueue::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::size_t RetryQueue::journal_memory() {
  std::lock_guard lock(mu_);
  for (const auto& reply : memory_) journal_.append(*reply);  // a failed append is logged by the journal
  return memory_.size();
}

bool RetryQueue::empty() const {
  std::lock_guard lock(mu_);
  return memory_.empty() && journal_.empty();
}

std::size_t RetryQueue::deferred() const {
  std::lock_guard lock(mu_);
  return memory_.size();
}

error_code RetryQueue::defer(Reply reply) {
  std::unique_lock lock(mu_);
  if (memory_.size() >= limit_) {
    lock.unlock();
    return spill(*reply);
  }
  memory_.push_back(reply);
  auto queued = memory_.size();
  lock.unlock();
  cv_.notify_one();
  log::warn("store_write_deferred", {{"message_id", reply->message_id}, {"queued", queued}});
  return {};
}

error_code RetryQueue::spill(const AssistantMessage& reply) {
  auto ec = journal_.append(reply);
  if (!ec) wake();
  return ec;
}

// Under the lock: the thread may be between its look at the journal and its wait.
void RetryQueue::wake() {
  std::lock_guard lock(mu_);
  cv_.notify_one();
}

// Writes deferred replies on a connection of its own, so the pool keeps serving
// meanwhile. A reply leaves the queue only once written (or refused for good),
// which is what flush() waits for.
void RetryQueue::run() {
  Link link(params_, nullptr);
  auto backoff = kMinBackoff;
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !memory_.empty() || !journal_.empty(); });
    const bool from_memory = !memory_.empty();
    if (!from_memory && stopping_) return;
    Reply reply = from_memory ? memory_.front() : nullptr;
    lock.unlock();
    if (!from_memory) reply = next_spilled();  // file I/O, outside the lock
    error_code ec = reply ? link.run([&](Connection& c) { return save_assistant(c, *reply); }) : error_code{};
    lock.lock();
    if (ec == Errc::unavailable) {
      if (stopping_) return spill_all(lock);
      cv_.wait_for(lock, backoff, [&] { return stopping_; });
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    backoff = kMinBackoff;
    if (from_memory) {
      memory_.pop_front();
    } else if (reply) {
      journal_.pop_front();
    }
    if (reply) detail::log_deferred_write(reply->message_id, ec);
    // Outages are rare: hold the extra connection only while there is a backlog.
    if (memory_.empty() && journal_.empty()) link.close();
    lock.unlock();
    on_written_();
    lock.lock();
  }
}

// nullptr when the journal turned out to hold nothing readable.
RetryQueue::Reply RetryQueue::next_spilled() {
  auto m = journal_.front();
  return m ? std::make_shared<const AssistantMessage>(std::move(*m)) : nullptr;
}

// Shutting down with the server still away: the replies in memory join the
// journal, which the next store on this database writes.
void RetryQueue::spill_all(std::unique_lock<std::mutex>& lock) {
  std::deque<Reply> left;
  left.swap(memory_);
  lock.unlock();
  for (const auto& reply : left) {
    if (journal_.append(*reply)) log::error("store_retry_dropped", {{"message_id", reply->message_id}});
  }
}

}  // namespace chat::store::pg
