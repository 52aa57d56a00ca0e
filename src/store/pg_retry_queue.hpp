#pragma once
// PostgresStore's deferred replies: those whose write found the server down wait
// here in memory, in order (at most `limit`), and those that find no room, in
// the pool's queue or here, wait in the spill journal on disk. A thread with a
// connection of its own writes them, memory first, as soon as the server takes
// them (see postgres_store.hpp, Outage and assistant replies).

#include <boost/system/error_code.hpp>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "store/message_store.hpp"
#include "store/pg_link.hpp"
#include "store/spill_journal.hpp"

namespace chat::store::pg {

class RetryQueue {
 public:
  using Reply = std::shared_ptr<const AssistantMessage>;

  // Adopts what earlier stores left in `spill_dir` (throws when it is unusable).
  // `on_written` runs on the retry thread, without the queue's lock, each time a
  // reply has left the queue (written, or refused for good): flush() waiters may
  // be done.
  RetryQueue(const ConnectParams& params, std::size_t limit, const std::filesystem::path& spill_dir,
             std::function<void()> on_written);
  // stop().
  ~RetryQueue();
  RetryQueue(const RetryQueue&) = delete;
  RetryQueue& operator=(const RetryQueue&) = delete;

  // Starts writing, the adopted journal first: call once the schema is migrated.
  void start();
  // A reply the server was down for: in memory, or in the journal when memory is
  // full. The journal's error when it cannot take the reply either.
  boost::system::error_code defer(Reply reply);
  // A reply the pool had no room for.
  boost::system::error_code spill(const AssistantMessage& reply);
  // Nothing waits, in memory or in the journal.
  bool empty() const;
  // Replies waiting in memory (the one being written included).
  std::size_t deferred() const;
  // The journal's unread bytes.
  std::uint64_t spilled_bytes() const { return journal_.unread_bytes(); }
  // The store is stopping: copies the replies in memory to the journal now,
  // before stop() waits on a server that may never answer, so a process killed
  // meanwhile loses none of them. A copy of a reply that is then written after
  // all, or moved to the journal again by stop(), changes nothing when the next
  // store writes it (writes are insert-if-absent).
  // Returns how many it copied.
  std::size_t journal_memory();
  // Gives the replies in memory a last try while the server answers, moves those
  // it cannot write to the journal, and joins the thread. The journal stays on
  // disk for the next store. Idempotent.
  void stop();

 private:
  void run();
  Reply next_spilled();
  void wake();
  void spill_all(std::unique_lock<std::mutex>& lock);

  const ConnectParams& params_;
  const std::size_t limit_;
  const std::function<void()> on_written_;
  SpillJournal journal_;
  mutable std::mutex mu_;  // guards everything below; taken before the journal's own lock
  std::condition_variable cv_;
  std::deque<Reply> memory_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace chat::store::pg
