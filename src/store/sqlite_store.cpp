#include "store/sqlite_store.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <thread>

#include "log/log.hpp"
#include "store/sqlite_db.hpp"
#include "store/store_detail.hpp"
#include "store/work_queue.hpp"

namespace chat::store {
namespace {

using boost::system::error_code;
using sqlite::Connection;
using sqlite::Transaction;

// ---- schema ---------------------------------------------------------------
// Times are INTEGER microseconds since the Unix epoch (UTC): exact, and they sort.

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, "create chat_sessions and messages", R"sql(
CREATE TABLE chat_sessions (
  session_id      TEXT PRIMARY KEY,
  user_id         TEXT NOT NULL,
  title           TEXT NOT NULL DEFAULT '',
  ai_provider     TEXT NOT NULL DEFAULT '',
  model_name      TEXT NOT NULL DEFAULT '',
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  last_message_at INTEGER NOT NULL
);
CREATE TABLE messages (
  message_id  TEXT PRIMARY KEY,
  session_id  TEXT NOT NULL REFERENCES chat_sessions (session_id),
  role        TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
  content     TEXT NOT NULL,
  token_count INTEGER NOT NULL DEFAULT 0,
  status      TEXT NOT NULL CHECK (status IN ('complete', 'error', 'cancelled', 'incomplete')),
  metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
  created_at  INTEGER NOT NULL
);
CREATE INDEX messages_session_created ON messages (session_id, created_at);
)sql"},
    // GET /api/sessions lists one user's sessions, newest first.
    {2, "index sessions by user",
     "CREATE INDEX chat_sessions_user_recent ON chat_sessions (user_id, last_message_at);"},
};

bool is_applied(Connection& db, int version, error_code& ec) {
  auto q = db.query("SELECT 1 FROM schema_migrations WHERE version = ?1");
  bool found = q.bind(std::int64_t{version}).next();
  ec = q.error();
  return found;
}

error_code apply(Connection& db, const Migration& m) {
  if (auto ec = db.exec(m.sql)) return ec;
  return db.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)")
      .bind(std::int64_t{m.version})
      .bind(m.name)
      .bind(detail::to_micros(std::chrono::system_clock::now()))
      .run();
}

// All pending migrations in one write transaction: a second process opening the
// same file waits for the lock and then finds them applied.
void migrate(Connection& db, const std::string& path) {
  auto fail = [&](const char* step) { throw std::runtime_error("SQLite migration failed (" + path + "): " + step); };
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) fail("cannot lock the database");
  if (db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
              "applied_at INTEGER NOT NULL)"))
    fail("schema_migrations");
  for (const auto& m : kMigrations) {
    error_code ec;
    if (is_applied(db, m.version, ec)) continue;
    if (ec || apply(db, m)) fail(m.name);
    log::info("store_migration_applied", {{"kind", "sqlite"}, {"version", m.version}, {"name", m.name}});
  }
  if (tx.commit()) fail("commit");
}

Connection open_database(const std::string& path) {
  // ":memory:" and "file:" URIs name no directory.
  if (path != ":memory:" && path.rfind("file:", 0) != 0) {
    auto dir = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error("cannot create directory " + dir.string() + " for DB_PATH: " + ec.message());
  }
  auto db = Connection::open(path);
  migrate(db, path);
  return db;
}

// ---- sessions -------------------------------------------------------------

// A session's owner; nullopt when there is no such session.
error_code read_owner(Connection& db, const std::string& session_id, std::optional<std::string>& owner) {
  auto q = db.query("SELECT user_id FROM chat_sessions WHERE session_id = ?1");
  owner = q.bind(session_id).next() ? std::optional(q.text(0)) : std::nullopt;
  return q.error();
}

error_code check_owner(Connection& db, const std::string& session_id, const std::string& user_id) {
  std::optional<std::string> owner;
  if (auto ec = read_owner(db, session_id, owner)) return ec;
  if (!owner) return Errc::not_found;
  return *owner == user_id ? error_code{} : make_error_code(Errc::forbidden);
}

// Creates the session on first use, titled after its first message.
error_code claim_session(Connection& db, const NewUserMessage& m, std::int64_t at) {
  auto ec = db.query(
                  "INSERT INTO chat_sessions (session_id, user_id, title, ai_provider, model_name, created_at, "
                  "updated_at, last_message_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6) "
                  "ON CONFLICT (session_id) DO NOTHING")
                .bind(m.session_id)
                .bind(m.user_id)
                .bind(make_title(m.content))
                .bind(m.ai_provider)
                .bind(m.model)
                .bind(at)
                .run();
  return ec ? ec : check_owner(db, m.session_id, m.user_id);
}

// A new message moves the session's clocks forward (never back: replies of two
// pods may land out of order) and records the provider/model last asked for.
error_code touch_session(Connection& db, const std::string& session_id, std::int64_t at, const std::string& provider,
                         const std::string& model) {
  return db.query(
               "UPDATE chat_sessions SET updated_at = max(updated_at, ?2), last_message_at = max(last_message_at, ?2), "
               "ai_provider = coalesce(nullif(?3, ''), ai_provider), model_name = coalesce(nullif(?4, ''), model_name) "
               "WHERE session_id = ?1")
      .bind(session_id)
      .bind(at)
      .bind(provider)
      .bind(model)
      .run();
}

SessionSummary read_session(const sqlite::Query& q) {
  return SessionSummary{q.text(0),  q.text(1), q.text(2), q.text(3), q.text(4), detail::from_micros(q.integer(5)),
                        detail::from_micros(q.integer(6)), detail::from_micros(q.integer(7))};
}

// ---- messages -------------------------------------------------------------

constexpr const char* kInsertMessage =
    "INSERT INTO messages (message_id, session_id, role, content, token_count, status, metadata, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (message_id) DO NOTHING";

// The messages before the new one that the worker sends as context, oldest first.
error_code read_history(Connection& db, const NewUserMessage& m, unsigned turns,
                        std::vector<protocol::HistoryEntry>& out) {
  if (turns == 0) return {};
  auto q = db.query(
      "SELECT role, content FROM (SELECT role, content, created_at, message_id FROM messages "
      "WHERE session_id = ?1 AND message_id <> ?2 ORDER BY created_at DESC, message_id DESC LIMIT ?3) "
      "ORDER BY created_at, message_id");
  q.bind(m.session_id).bind(m.message_id).bind(std::int64_t{turns});
  while (q.next()) out.push_back({q.text(0), q.text(1)});
  return q.error();
}

StoredMessage read_message(const sqlite::Query& q) {
  return StoredMessage{q.text(0),    q.text(1), q.text(2), q.text(3),
                       q.integer(4), q.text(5), q.text(6), detail::from_micros(q.integer(7))};
}

// The cursor is a message id; its position is (created_at, message_id).
error_code cursor_time(Connection& db, const std::string& session_id, const std::string& before, std::int64_t& at) {
  auto q = db.query("SELECT created_at FROM messages WHERE message_id = ?1 AND session_id = ?2");
  if (q.bind(before).bind(session_id).next()) {
    at = q.integer(0);
    return {};
  }
  return q.error() ? q.error() : make_error_code(Errc::not_found);
}

// Reads the `limit` newest messages older than the cursor, plus one more to
// learn whether an older page exists.
error_code read_page(Connection& db, const std::string& session_id, std::size_t limit, const std::string& before,
                     MessagePage& page) {
  constexpr const char* kColumns =
      "SELECT message_id, session_id, role, content, token_count, status, metadata, created_at FROM messages ";
  std::int64_t at = 0;
  if (!before.empty()) {
    if (auto ec = cursor_time(db, session_id, before, at)) return ec;
  }
  auto q = db.query(std::string(kColumns) +
                    (before.empty() ? "WHERE session_id = ?1 ORDER BY created_at DESC, message_id DESC LIMIT ?2"
                                    : "WHERE session_id = ?1 AND (created_at, message_id) < (?3, ?4) "
                                      "ORDER BY created_at DESC, message_id DESC LIMIT ?2"));
  q.bind(session_id).bind(static_cast<std::int64_t>(limit + 1));
  if (!before.empty()) q.bind(at).bind(before);
  while (q.next()) page.messages.push_back(read_message(q));
  if (q.error()) return q.error();
  if (page.messages.size() > limit) {
    page.messages.pop_back();
    page.next_before = page.messages.back().message_id;
  }
  std::reverse(page.messages.begin(), page.messages.end());
  return {};
}

// ---- operations (each one job on the store thread) -------------------------

error_code accept(Connection& db, const NewUserMessage& m, unsigned turns, std::vector<protocol::HistoryEntry>& out) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  auto at = detail::to_micros(m.created_at);
  if (auto ec = claim_session(db, m, at)) return ec;
  if (auto ec = read_history(db, m, turns, out)) return ec;
  auto ec = db.query(kInsertMessage)
                .bind(m.message_id)
                .bind(m.session_id)
                .bind("user")
                .bind(m.content)
                .bind(std::int64_t{0})
                .bind("complete")
                .bind("{}")
                .bind(at)
                .run();
  if (ec) return ec;
  if (auto ec2 = touch_session(db, m.session_id, at, m.ai_provider, m.model)) return ec2;
  return tx.commit();
}

// Insert-if-absent and the session's clocks in one transaction: the first write
// wins, a repeat changes nothing.
error_code save_assistant(Connection& db, const AssistantMessage& m) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  std::optional<std::string> owner;
  if (auto ec = read_owner(db, m.session_id, owner)) return ec;
  if (!owner) return Errc::not_found;  // deleted while the reply streamed
  auto at = detail::to_micros(m.created_at);
  auto ec = db.query(kInsertMessage)
                .bind(m.message_id)
                .bind(m.session_id)
                .bind("assistant")
                .bind(m.content)
                .bind(m.token_count)
                .bind(m.status)
                .bind(m.metadata_json)
                .bind(at)
                .run();
  if (ec) return ec;
  if (db.changes() == 1) {
    if (auto ec2 = touch_session(db, m.session_id, at, {}, {})) return ec2;
  }
  return tx.commit();
}

// Undoes accept: the user message goes, and so does a session it alone created.
error_code discard(Connection& db, const std::string& message_id) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  std::string session_id;
  {
    auto q = db.query("SELECT session_id FROM messages WHERE message_id = ?1 AND role = 'user'");
    if (!q.bind(message_id).next()) return q.error() ? q.error() : make_error_code(Errc::not_found);
    session_id = q.text(0);
  }  // reset before the deletes below
  if (auto ec = db.query("DELETE FROM messages WHERE message_id = ?1").bind(message_id).run()) return ec;
  auto ec = db.query("DELETE FROM chat_sessions WHERE session_id = ?1 AND NOT EXISTS "
                     "(SELECT 1 FROM messages WHERE session_id = ?1)")
                .bind(session_id)
                .run();
  if (ec) return ec;
  ec = db.query("UPDATE chat_sessions SET last_message_at = "
                "(SELECT max(created_at) FROM messages WHERE session_id = ?1) WHERE session_id = ?1")
           .bind(session_id)
           .run();
  return ec ? ec : tx.commit();
}

error_code sessions_of(Connection& db, const std::string& user_id, std::size_t limit,
                       std::vector<SessionSummary>& out) {
  auto q = db.query(
      "SELECT session_id, user_id, title, ai_provider, model_name, created_at, updated_at, last_message_at "
      "FROM chat_sessions WHERE user_id = ?1 ORDER BY last_message_at DESC, session_id DESC LIMIT ?2");
  q.bind(user_id).bind(static_cast<std::int64_t>(detail::clamp_limit(limit)));
  while (q.next()) out.push_back(read_session(q));
  return q.error();
}

error_code page_of(Connection& db, const std::string& session_id, const std::string& user_id, std::size_t limit,
                   const std::string& before, MessagePage& page) {
  Transaction tx(db, Transaction::Mode::read);  // one snapshot for owner, cursor and page
  if (tx.error()) return tx.error();
  if (auto ec = check_owner(db, session_id, user_id)) return ec;
  return read_page(db, session_id, detail::clamp_limit(limit), before, page);
}

error_code remove_session(Connection& db, const std::string& session_id, const std::string& user_id) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  if (auto ec = check_owner(db, session_id, user_id)) return ec;
  if (auto ec = db.query("DELETE FROM messages WHERE session_id = ?1").bind(session_id).run()) return ec;
  if (auto ec = db.query("DELETE FROM chat_sessions WHERE session_id = ?1").bind(session_id).run()) return ec;
  return tx.commit();
}

}  // namespace

// ---- the store thread -------------------------------------------------------

struct SqliteStore::Impl {
  using Job = std::function<void(Connection&)>;

  Impl(const config::StoreConfig& cfg) : db(open_database(cfg.path)), queue(cfg.queue_limit) {
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
    return accept(db, m, history_turns, history);
  });
}

void SqliteStore::discard_message(std::string message_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(message_id)](Connection& db) { return discard(db, id); });
}

void SqliteStore::save_assistant_message(AssistantMessage m, DoneCallback done) {
  impl_->enqueue(std::move(done),
                 [m = detail::normalised(std::move(m))](Connection& db) { return save_assistant(db, m); });
}

void SqliteStore::session_owner(std::string session_id, OwnerCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(session_id)](Connection& db, std::optional<std::string>& owner) {
    return read_owner(db, id, owner);
  });
}

void SqliteStore::list_sessions(std::string user_id, std::size_t limit, SessionsCallback done) {
  impl_->enqueue(std::move(done), [user = std::move(user_id), limit](Connection& db, auto& out) {
    return sessions_of(db, user, limit, out);
  });
}

void SqliteStore::list_messages(std::string session_id, std::string user_id, std::size_t limit, std::string before,
                                PageCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id), limit,
                                   before = std::move(before)](Connection& db, MessagePage& page) {
    return page_of(db, session, user, limit, before, page);
  });
}

void SqliteStore::delete_session(std::string session_id, std::string user_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id)](Connection& db) {
    return remove_session(db, session, user);
  });
}

// One thread runs the jobs in order, so the flush job runs after everything
// queued before it.
void SqliteStore::flush(DoneCallback done) {
  impl_->enqueue(std::move(done), [](Connection&) { return error_code{}; });
}

}  // namespace chat::store
