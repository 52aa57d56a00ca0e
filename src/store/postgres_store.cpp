#include "store/postgres_store.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "log/log.hpp"
#include "store/pg_conn.hpp"
#include "store/pg_link.hpp"
#include "store/pg_operations.hpp"
#include "store/pg_retry_queue.hpp"
#include "store/pg_schema.hpp"
#include "store/spill_journal.hpp"
#include "store/store_detail.hpp"
#include "store/work_queue.hpp"

namespace chat::store {
namespace {

using boost::system::error_code;
using pg::Connection;

// ---- jobs -----------------------------------------------------------------

struct Job {
  std::uint64_t seq = 0;
  pg::Attempt attempt;  // empty: no database work (a flush marker)
  std::function<void(error_code)> complete;
  pg::RetryQueue::Reply reply;  // set for assistant replies: they wait out an outage
};

struct FlushWaiter {
  std::uint64_t seq;  // done once no job older than this is pending
  DoneCallback done;
};

}  // namespace

struct PostgresStore::Impl {
  explicit Impl(const config::StoreConfig& cfg)
      : params(cfg),
        queue(cfg.queue_limit),
        retry(params, cfg.queue_limit, spill_dir_for(cfg), [this] { release_ready_waiters(); }) {
    open_pool(std::max(cfg.pool_size, 1u));
    for (auto& link : links) workers.emplace_back([this, l = link.get()] { work(*l); });
    retry.start();
  }

  ~Impl() {
    journal_unwritten();
    for (auto& t : workers) t.join();  // the queued jobs still run (failing fast when the server is down)
    retry.stop();
    release_waiters(make_error_code(Errc::unavailable));
  }

  // A reply queued, being written or waiting to be retried is copied to the
  // spill journal before the joins above wait on the server: one that hangs
  // (a stalled primary, a partition: up to tcp_user_timeout per query) can
  // outlast the process's grace period, and a process killed then loses
  // nothing. The writes still go ahead, so a server that answers gets them
  // now; the copies make the next store's replay a few idempotent no-ops.
  void journal_unwritten() {
    queue.close();
    std::vector<pg::RetryQueue::Reply> unwritten;
    std::set<std::uint64_t> queued;
    queue.for_each([&](const Job& job) {
      if (!job.reply) return;
      unwritten.push_back(job.reply);
      queued.insert(job.seq);
    });
    {
      std::lock_guard lock(mu);
      for (const auto& [seq, reply] : writing) {
        if (!queued.contains(seq)) unwritten.push_back(reply);
      }
      stopping = true;
      copied = std::move(queued);
    }
    const auto deferred = retry.journal_memory();
    for (const auto& reply : unwritten) retry.spill(*reply);
    if (const auto n = unwritten.size() + deferred; n > 0) log::warn("store_replies_journaled_at_stop", {{"replies", n}});
  }

  void open_pool(unsigned size) {
    for (unsigned i = 0; i < size; ++i) links.push_back(std::make_unique<pg::Link>(params, &health));
    if (!links.front()->connect_now()) {
      throw std::runtime_error("cannot connect to PostgreSQL (" + params.describe() +
                               "): " + links.front()->error_message());
    }
    pg::migrate(links.front()->connection());
    // The others connect now too, so connected() is true from the start; one
    // that fails keeps trying from its thread.
    for (std::size_t i = 1; i < links.size(); ++i) links[i]->connect_now();
  }

  // ---- the pool ----

  void work(pg::Link& link) {
    for (;;) {
      if (auto job = queue.pop(std::chrono::seconds(1))) {
        execute(link, *job);
      } else if (queue.closed_and_empty()) {
        return;
      } else {
        link.idle();
      }
    }
  }

  void execute(pg::Link& link, Job& job) {
    track(job);
    error_code ec = job.attempt ? link.run(job.attempt) : error_code{};
    if (ec == Errc::unavailable && job.reply) ec = retry.defer(job.reply);
    job.complete(ec);
    finish(job.seq);
  }

  // Replies being written, for journal_unwritten(). A job that starts after it
  // looked, and that it did not find queued, copies its own reply: it was taken
  // from the queue before the look but had not reached this map yet.
  void track(const Job& job) {
    if (!job.reply) return;
    bool copy = false;
    {
      std::lock_guard lock(mu);
      writing.emplace(job.seq, job.reply);
      copy = stopping && !copied.contains(job.seq);
    }
    if (copy) retry.spill(*job.reply);
  }

  bool submit(Job&& job) {
    std::uint64_t seq;
    {
      std::lock_guard lock(mu);
      seq = job.seq = ++next_seq;
      pending.insert(seq);
    }
    if (queue.try_push(std::move(job))) return true;
    finish(seq);
    return false;
  }

  // Queues `body(conn, result)`; its code and result go to `done` on a store thread.
  template <class Result, class Body>
  void enqueue(std::function<void(error_code, Result)> done, Body body) {
    auto result = std::make_shared<Result>();
    Job job;
    job.attempt = [result, body = std::move(body)](Connection& c) {
      *result = Result{};  // a retried attempt starts from scratch
      return body(c, *result);
    };
    job.complete = [result, done](error_code ec) { detail::invoke(done, ec, ec ? Result{} : std::move(*result)); };
    if (!submit(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded), Result{});
  }

  template <class Body>
  void enqueue(DoneCallback done, Body body) {
    Job job;
    job.attempt = std::move(body);
    job.complete = [done](error_code ec) { detail::invoke(done, ec); };
    if (!submit(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded));
  }

  void save_reply(AssistantMessage m, DoneCallback done) {
    auto reply = std::make_shared<const AssistantMessage>(std::move(m));
    Job job;
    job.attempt = [reply](Connection& c) { return pg::save_assistant(c, *reply); };
    job.complete = [done](error_code ec) { detail::invoke(done, ec); };
    job.reply = reply;
    // No room: the reply waits in the spill journal instead of being refused.
    if (!submit(std::move(job))) detail::invoke(done, retry.spill(*reply));
  }

  // ---- flush ----

  void flush(DoneCallback done) {
    Job marker;
    marker.complete = [](error_code) {};
    std::uint64_t seq;
    {
      std::lock_guard lock(mu);
      seq = marker.seq = ++next_seq;
      pending.insert(seq);
      waiters.push_back({seq, done});
    }
    // The marker makes a store thread look at the waiters even when nothing
    // older is pending, so `done` never runs on the caller's thread.
    if (queue.try_push(std::move(marker))) return;
    bool still_waiting = false;
    {
      std::lock_guard lock(mu);
      still_waiting = std::erase_if(waiters, [seq](const FlushWaiter& w) { return w.seq == seq; }) > 0;
    }
    finish(seq);
    // A store thread that ended the work before it may have answered it
    // meanwhile (everything it waited for was done): once is all.
    if (still_waiting) detail::invoke(done, make_error_code(Errc::overloaded));
  }

  void finish(std::uint64_t seq) {
    std::vector<DoneCallback> ready;
    {
      std::lock_guard lock(mu);
      pending.erase(seq);
      writing.erase(seq);
      ready = take_ready_waiters();
    }
    for (auto& done : ready) detail::invoke(done, error_code{});
  }

  void release_ready_waiters() {
    std::vector<DoneCallback> ready;
    {
      std::lock_guard lock(mu);
      ready = take_ready_waiters();
    }
    for (auto& done : ready) detail::invoke(done, error_code{});
  }

  // Under `mu`.
  std::vector<DoneCallback> take_ready_waiters() {
    std::vector<DoneCallback> ready;
    if (!retry.empty()) return ready;
    auto oldest = pending.empty() ? std::numeric_limits<std::uint64_t>::max() : *pending.begin();
    std::erase_if(waiters, [&](FlushWaiter& w) {
      if (oldest < w.seq) return false;
      ready.push_back(std::move(w.done));
      return true;
    });
    return ready;
  }

  void release_waiters(error_code ec) {
    std::vector<FlushWaiter> left;
    {
      std::lock_guard lock(mu);
      left.swap(waiters);
    }
    for (auto& w : left) detail::invoke(w.done, ec);
  }

  pg::ConnectParams params;
  WorkQueue<Job> queue;
  pg::PoolHealth health;
  std::vector<std::unique_ptr<pg::Link>> links;
  std::vector<std::thread> workers;
  pg::RetryQueue retry;  // its thread calls release_ready_waiters()

  std::mutex mu;  // guards everything below; taken before the retry queue's own lock
  std::uint64_t next_seq = 0;
  std::set<std::uint64_t> pending;  // queued or running jobs
  std::map<std::uint64_t, pg::RetryQueue::Reply> writing;  // running jobs' replies, by seq
  bool stopping = false;                // journal_unwritten() has looked
  std::set<std::uint64_t> copied;       // the queued jobs it copied
  std::vector<FlushWaiter> waiters;
};

PostgresStore::PostgresStore(const config::StoreConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {
  log::info("store_opened", {{"kind", "postgres"},
                             {"server", impl_->params.describe()},
                             {"pool_size", cfg.pool_size},
                             {"queue_limit", cfg.queue_limit},
                             {"spill_dir", spill_dir_for(cfg).string()}});
}

PostgresStore::~PostgresStore() = default;

ComponentStatus PostgresStore::status() const {
  return {.backend = "postgres",
          .connected = impl_->health.links_up.load() > 0,
          .queued = impl_->queue.size() + impl_->retry.deferred(),
          .spilled_bytes = impl_->retry.spilled_bytes()};
}

void PostgresStore::accept_user_message(NewUserMessage m, unsigned history_turns, HistoryCallback done) {
  impl_->enqueue(std::move(done), [m = std::move(m), history_turns](Connection& c, auto& history) {
    return pg::accept(c, m, history_turns, history);
  });
}

void PostgresStore::discard_message(std::string message_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(message_id)](Connection& c) { return pg::discard(c, id); });
}

void PostgresStore::save_assistant_message(AssistantMessage m, DoneCallback done) {
  impl_->save_reply(detail::normalised(std::move(m)), std::move(done));
}

void PostgresStore::claim_session(std::string session_id, std::string user_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id),
                                   at = std::chrono::system_clock::now()](Connection& c) { return pg::reserve(c, session, user, at); });
}

void PostgresStore::session_owner(std::string session_id, OwnerCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(session_id)](Connection& c, std::optional<std::string>& owner) {
    return pg::read_owner(c, pg::kOwner, id, owner);
  });
}

void PostgresStore::list_sessions(std::string user_id, std::size_t limit, std::optional<SessionCursor> before,
                                  SessionsCallback done) {
  impl_->enqueue(std::move(done), [user = std::move(user_id), limit, before = std::move(before)](Connection& c,
                                                                                                 SessionPage& page) {
    return pg::sessions_of(c, user, limit, before, page);
  });
}

void PostgresStore::list_messages(std::string session_id, std::string user_id, std::size_t limit, std::string before,
                                  PageCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id), limit,
                                   before = std::move(before)](Connection& c, MessagePage& page) {
    return pg::page_of(c, session, user, limit, before, page);
  });
}

void PostgresStore::delete_session(std::string session_id, std::string user_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id)](Connection& c) {
    return pg::remove_session(c, session, user);
  });
}

void PostgresStore::flush(DoneCallback done) { impl_->flush(std::move(done)); }

}  // namespace chat::store
