#include "store/sqlite_store.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "log/log.hpp"
#include "store/sqlite_db.hpp"
#include "store/sqlite_operations.hpp"
#include "store/spill_journal.hpp"
#include "store/sqlite_schema.hpp"
#include "store/store_detail.hpp"
#include "store/work_queue.hpp"

namespace chat::store {

using boost::system::error_code;
using sqlite::Connection;

// ---- the store thread -------------------------------------------------------

struct SqliteStore::Impl {
  // Hands a job's result on once the transaction it ran in ended: `committed`
  // is that transaction's COMMIT (a job that failed reports its own error).
  using Finish = std::function<void(error_code committed)>;
  using Job = std::function<Finish(Connection&)>;

  explicit Impl(const config::StoreConfig& cfg)
      : db(sqlite::open_database(cfg.path)), queue(cfg.queue_limit), journal(spill_dir_for(cfg)) {
    thread = std::thread([this] { run(); });
  }

  ~Impl() {
    queue.close();
    thread.join();
  }

  // The jobs in order, those waiting together in one transaction, and after
  // each batch one spilled reply, so the journal drains even while the queue
  // stays full.
  void run() {
    std::vector<Job> batch;
    for (;;) {
      if (auto job = queue.pop(until_next_replay())) {
        batch.push_back(std::move(*job));
        while (batch.size() < kMaxBatch) {
          auto more = queue.try_pop();
          if (!more) break;
          batch.push_back(std::move(*more));
        }
        run_batch(batch);
        batch.clear();
      } else if (queue.closed_and_empty()) {
        break;
      }
      replay_one();
    }
    // What is left in the journal waits there for the next store on this file.
    release_flush_waiters(make_error_code(Errc::unavailable));
  }

  // Jobs that waited together share one transaction, each in a savepoint of its
  // own: one COMMIT, one write of the WAL's pages, for all of them. Their
  // callers hear after that COMMIT. A batch that cannot begin (another process
  // holds the file) runs each job in a transaction of its own, as one job does;
  // so do the jobs after one whose error made SQLite roll the whole transaction
  // back (an I/O error, a full disk), and only those before it share its fate.
  void run_batch(std::vector<Job>& jobs) {
    std::vector<std::pair<Finish, bool>> finishes;  // and whether it ran in the shared transaction
    finishes.reserve(jobs.size());
    error_code committed;
    {
      std::optional<sqlite::Transaction> shared;
      if (jobs.size() > 1) shared.emplace(db, sqlite::Transaction::Mode::write);
      for (auto& job : jobs) {
        const bool in_shared = shared && !shared->error() && db.in_transaction();
        finishes.emplace_back(job(db), in_shared);
      }
      // Rolled back whole by a later job's error (a full disk, an I/O error):
      // COMMIT would only say "no transaction is active", and the jobs that
      // had gone in would be lost instead of waiting for the file.
      if (shared && !shared->error())
        committed = db.in_transaction() ? shared->commit() : make_error_code(Errc::unavailable);
    }
    for (auto& [finish, in_shared] : finishes) finish(in_shared ? committed : error_code{});
  }

  // ---- the spill journal ----

  std::chrono::milliseconds until_next_replay() const {
    if (journal.empty()) return std::chrono::hours(1);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(replay_at - std::chrono::steady_clock::now());
    return std::max(left, std::chrono::milliseconds(0));
  }

  void replay_one() {
    if (journal.empty() || std::chrono::steady_clock::now() < replay_at) return;
    if (auto reply = journal.front()) {
      auto ec = sqlite::save_assistant(db, *reply);
      if (ec == Errc::unavailable) return back_off();  // the file is locked or full: the reply waits
      replay_backoff = kMinReplayBackoff;
      detail::log_deferred_write(reply->message_id, ec);
      journal.pop_front();
    }
    if (journal.empty()) release_flush_waiters({});
  }

  // The file is locked by another process (past the busy timeout), full or
  // failing: the reply waits in the journal, as one that found the queue full
  // does, and is written once the file takes it.
  error_code defer(const AssistantMessage& reply) {
    auto ec = journal.append(reply);
    log::warn("reply_write_deferred", {{"message_id", reply.message_id}, {"spilled", !ec}});
    back_off();
    return ec;
  }

  void back_off() {
    replay_at = std::chrono::steady_clock::now() + replay_backoff;
    replay_backoff = std::min(replay_backoff * 2, kMaxReplayBackoff);
  }

  void save_reply(AssistantMessage m, DoneCallback done) {
    auto reply = std::make_shared<const AssistantMessage>(std::move(m));
    Job job = [this, reply, done](Connection& conn) -> Finish {
      return [this, reply, done, ec = sqlite::save_assistant(conn, *reply)](error_code committed) {
        const auto failed = ec ? ec : committed;
        detail::invoke(done, failed == Errc::unavailable ? defer(*reply) : failed);
      };
    };
    // No room: the reply waits in the journal instead of being refused. The
    // store thread may have just begun an hour's wait, counting on an empty
    // journal: it is woken to write it.
    if (queue.try_push(std::move(job))) return;
    auto ec = journal.append(*reply);
    queue.wake();
    detail::invoke(done, ec);
  }

  // A flush job is done once the journal is empty too.
  void flush(DoneCallback done) {
    Job job = [this, done](Connection&) -> Finish {
      return [this, done](error_code) {
        if (journal.empty()) return detail::invoke(done, error_code{});
        flush_waiters.push_back(done);
      };
    };
    if (!queue.try_push(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded));
  }

  void release_flush_waiters(error_code ec) {
    for (auto& done : std::exchange(flush_waiters, {})) detail::invoke(done, ec);
  }

  // Queues `body(db, result)`; its error code and result go to `done` on the
  // store thread. A full queue answers Errc::overloaded at once.
  template <class Result, class Body>
  void enqueue(std::function<void(error_code, Result)> done, Body body) {
    Job job = [done, body = std::move(body)](Connection& conn) mutable -> Finish {
      Result result{};
      auto ec = body(conn, result);
      return [done, ec, result = std::move(result)](error_code committed) mutable {
        auto failed = ec ? ec : committed;
        detail::invoke(done, failed, failed ? Result{} : std::move(result));
      };
    };
    if (!queue.try_push(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded), Result{});
  }

  template <class Body>
  void enqueue(DoneCallback done, Body body) {
    Job job = [done, body = std::move(body)](Connection& conn) mutable { return answer(done, body(conn)); };
    if (!queue.try_push(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded));
  }

  // A job's own error, else its transaction's COMMIT.
  static Finish answer(DoneCallback done, error_code ec) {
    return [done = std::move(done), ec](error_code committed) { detail::invoke(done, ec ? ec : committed); };
  }

  // Jobs in one transaction at most: the first of them waits for the last.
  static constexpr std::size_t kMaxBatch = 64;
  static constexpr std::chrono::milliseconds kMinReplayBackoff{100};
  static constexpr std::chrono::milliseconds kMaxReplayBackoff{2000};

  Connection db;
  WorkQueue<Job> queue;
  SpillJournal journal;
  // The store thread's own:
  std::vector<DoneCallback> flush_waiters;
  std::chrono::steady_clock::time_point replay_at{};
  std::chrono::milliseconds replay_backoff = kMinReplayBackoff;
  std::thread thread;
};

SqliteStore::SqliteStore(const config::StoreConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {
  log::info("store_opened", {{"kind", "sqlite"},
                             {"path", cfg.path},
                             {"queue_limit", cfg.queue_limit},
                             {"spill_dir", impl_->journal.dir().string()}});
}

SqliteStore::~SqliteStore() = default;

void SqliteStore::accept_user_message(NewUserMessage m, unsigned history_turns, HistoryCallback done) {
  impl_->enqueue(std::move(done), [m = std::move(m), history_turns](Connection& db, auto& history) {
    return sqlite::accept(db, m, history_turns, history);
  });
}

void SqliteStore::discard_message(std::string message_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(message_id)](Connection& db) { return sqlite::discard(db, id); });
}

void SqliteStore::save_assistant_message(AssistantMessage m, DoneCallback done) {
  impl_->save_reply(detail::normalised(std::move(m)), std::move(done));
}

void SqliteStore::claim_session(std::string session_id, std::string user_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id),
                                   at = detail::to_micros(std::chrono::system_clock::now())](Connection& db) {
    return sqlite::reserve(db, session, user, at);
  });
}

void SqliteStore::session_owner(std::string session_id, OwnerCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(session_id)](Connection& db, std::optional<std::string>& owner) {
    return sqlite::read_owner(db, id, owner);
  });
}

void SqliteStore::list_sessions(std::string user_id, std::size_t limit, std::optional<SessionCursor> before,
                                SessionsCallback done) {
  impl_->enqueue(std::move(done), [user = std::move(user_id), limit, before = std::move(before)](Connection& db,
                                                                                                 SessionPage& page) {
    return sqlite::sessions_of(db, user, limit, before, page);
  });
}

void SqliteStore::list_messages(std::string session_id, std::string user_id, std::size_t limit, std::string before,
                                PageCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id), limit,
                                   before = std::move(before)](Connection& db, MessagePage& page) {
    return sqlite::page_of(db, session, user, limit, before, page);
  });
}

void SqliteStore::delete_session(std::string session_id, std::string user_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id)](Connection& db) {
    return sqlite::remove_session(db, session, user);
  });
}

// One thread runs the jobs in order, so the flush job runs after everything
// queued before it.
void SqliteStore::flush(DoneCallback done) { impl_->flush(std::move(done)); }

ComponentStatus SqliteStore::status() const {
  return {.backend = "sqlite",
          .embedded = true,
          .connected = true,
          .queued = impl_->queue.size(),
          .spilled_bytes = impl_->journal.unread_bytes()};
}

}  // namespace chat::store
