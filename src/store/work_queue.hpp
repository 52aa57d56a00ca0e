#pragma once
// The bounded job queue between callers and a store's own threads. Callers never
// wait on it: a full queue refuses at once, which the stores turn into
// Errc::overloaded. Store threads block on it until work arrives or it closes.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

namespace chat::store {

template <class Job>
class WorkQueue {
 public:
  // A limit of 0 would refuse everything forever; one slot is the floor.
  explicit WorkQueue(std::size_t limit) : limit_(limit == 0 ? 1 : limit) {}

  // False (and `job` left untouched) when the queue is full or closed.
  bool try_push(Job&& job) {
    {
      std::lock_guard lock(mu_);
      if (closed_ || jobs_.size() >= limit_) return false;
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

  // Waits up to `wait` for a job. nullopt on timeout, after a wake(), or once
  // closed and drained (then closed_and_empty() is true for good).
  std::optional<Job> pop(std::chrono::milliseconds wait) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, wait, [&] { return closed_ || woken_ || !jobs_.empty(); });
    woken_ = false;
    return take_front();
  }

  // Ends the pop() waiting now, or the next one, without a job: the store
  // thread has work that is not a job (a reply put in its spill journal while
  // the queue was full, which its wait was not counting on).
  void wake() {
    {
      std::lock_guard lock(mu_);
      woken_ = true;
    }
    cv_.notify_one();
  }

  // The next job if one is waiting; never waits.
  std::optional<Job> try_pop() {
    std::lock_guard lock(mu_);
    return take_front();
  }

  // Refuses new jobs; the queued ones are still handed out so nothing accepted is dropped.
  void close() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

  std::size_t size() const {
    std::lock_guard lock(mu_);
    return jobs_.size();
  }

  // Calls `visit(const Job&)` on each queued job, oldest first, under the
  // queue's lock: keep it short, and never call back into the queue.
  template <class Visit>
  void for_each(Visit visit) const {
    std::lock_guard lock(mu_);
    for (const auto& job : jobs_) visit(job);
  }

  bool closed_and_empty() const {
    std::lock_guard lock(mu_);
    return closed_ && jobs_.empty();
  }

 private:
  // mu_ held.
  std::optional<Job> take_front() {
    if (jobs_.empty()) return std::nullopt;
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    return job;
  }

  const std::size_t limit_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool closed_ = false;
  bool woken_ = false;
};

}  // namespace chat::store
