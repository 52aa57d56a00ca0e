#include "store/sqlite_store.hpp"

#include <chrono>
#include <functional>
#include <thread>

#include "log/log.hpp"
#include "store/sqlite_db.hpp"
#include "store/sqlite_operations.hpp"
#include "store/sqlite_schema.hpp"
#include "store/store_detail.hpp"
#include "store/work_queue.hpp"

namespace chat::store {

using boost::system::error_code;
using sqlite::Connection;

// ---- the store thread -------------------------------------------------------

struct SqliteStore::Impl {
  using Job = std::function<void(Connection&)>;

  Impl(const config::StoreConfig& cfg) : db(sqlite::open_database(cfg.path)), queue(cfg.queue_limit) {
    thread = std::thread([this] { run(); });
  }

  ~Impl() {
    queue.close();
    thread.join();
  }

  void run() {
    for (;;) {
      if (auto job = queue.pop(std::chrono::hours(1))) {
        (*job)(db);
      } else if (queue.closed_and_empty()) {
        return;
      }
    }
  }

  // Queues `body(db, result)`; its error code and result go to `done` on the
  // store thread. A full queue answers Errc::overloaded at once.
  template <class Result, class Body>
  void enqueue(std::function<void(error_code, Result)> done, Body body) {
    Job job = [done, body = std::move(body)](Connection& conn) mutable {
      Result result{};
      auto ec = body(conn, result);
      detail::invoke(done, ec, ec ? Result{} : std::move(result));
    };
    if (!queue.try_push(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded), Result{});
  }

  template <class Body>
  void enqueue(DoneCallback done, Body body) {
    Job job = [done, body = std::move(body)](Connection& conn) mutable { detail::invoke(done, body(conn)); };
    if (!queue.try_push(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded));
  }

  Connection db;
  WorkQueue<Job> queue;
  std::thread thread;
};

SqliteStore::SqliteStore(const config::StoreConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {
  log::info("store_opened", {{"kind", "sqlite"}, {"path", cfg.path}, {"queue_limit", cfg.queue_limit}});
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
  impl_->enqueue(std::move(done),
                 [m = detail::normalised(std::move(m))](Connection& db) { return sqlite::save_assistant(db, m); });
}

void SqliteStore::session_owner(std::string session_id, OwnerCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(session_id)](Connection& db, std::optional<std::string>& owner) {
    return sqlite::read_owner(db, id, owner);
  });
}

void SqliteStore::list_sessions(std::string user_id, std::size_t limit, SessionsCallback done) {
  impl_->enqueue(std::move(done), [user = std::move(user_id), limit](Connection& db, auto& out) {
    return sqlite::sessions_of(db, user, limit, out);
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
void SqliteStore::flush(DoneCallback done) {
  impl_->enqueue(std::move(done), [](Connection&) { return error_code{}; });
}

}  // namespace chat::store
