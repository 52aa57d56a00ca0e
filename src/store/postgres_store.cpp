#include "store/postgres_store.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "log/log.hpp"
#include "store/pg_conn.hpp"
#include "store/pg_link.hpp"
#include "store/store_detail.hpp"
#include "store/work_queue.hpp"

namespace chat::store {
namespace {

using boost::system::error_code;
using pg::Connection;
using pg::Rows;

// ---- schema ---------------------------------------------------------------

struct Migration {
  int version;
  const char* name;
  std::vector<const char*> statements;  // one per PQexecParams call
};

// Foreign keys without ON DELETE CASCADE: deleting a session deletes its messages
// explicitly, so a race can never remove a message silently.
const std::vector<Migration>& migrations() {
  static const std::vector<Migration> list = {
      {1,
       "create chat_sessions and messages",
       {R"sql(CREATE TABLE chat_sessions (
  session_id      text PRIMARY KEY,
  user_id         text NOT NULL,
  title           text NOT NULL DEFAULT '',
  ai_provider     text NOT NULL DEFAULT '',
  model_name      text NOT NULL DEFAULT '',
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  last_message_at timestamptz NOT NULL))sql",
        R"sql(CREATE TABLE messages (
  message_id  text PRIMARY KEY,
  session_id  text NOT NULL REFERENCES chat_sessions (session_id),
  role        text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
  content     text NOT NULL,
  token_count bigint NOT NULL DEFAULT 0,
  status      text NOT NULL CHECK (status IN ('complete', 'error', 'cancelled', 'incomplete')),
  metadata    jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL))sql",
        "CREATE INDEX messages_session_created ON messages (session_id, created_at)"}},
      // GET /api/sessions lists one user's sessions, newest first.
      {2,
       "index sessions by user",
       {"CREATE INDEX chat_sessions_user_recent ON chat_sessions (user_id, last_message_at)"}},
  };
  return list;
}

// pg_advisory_xact_lock key for migrations: "chat" in ASCII.
constexpr const char* kMigrationLock = "1667785076";

void check(error_code ec, const Connection& c, const std::string& step) {
  if (ec) {
    throw std::runtime_error("PostgreSQL migration failed at " + step + ": " + ec.message() + " " +
                             c.error_message());
  }
}

error_code apply(Connection& c, const Migration& m) {
  for (const char* statement : m.statements) {
    if (auto ec = c.exec(statement)) return ec;
  }
  return c.exec("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", {std::to_string(m.version), m.name});
}

// Pods starting together queue on the advisory lock, so exactly one applies each
// migration and the others find it recorded. The lock ends with the transaction,
// and PostgreSQL's DDL is transactional: a failed migration leaves nothing behind.
void migrate(Connection& c) {
  pg::Transaction tx(c);
  check(tx.error(), c, "BEGIN");
  check(c.exec("SELECT pg_advisory_xact_lock($1)", {kMigrationLock}), c, "advisory lock");
  check(c.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
               "applied_at timestamptz NOT NULL DEFAULT now())"),
        c, "schema_migrations");
  for (const auto& m : migrations()) {
    Rows rows;
    check(c.exec("SELECT 1 FROM schema_migrations WHERE version = $1", {std::to_string(m.version)}, &rows), c,
          m.name);
    if (!rows.empty()) continue;
    check(apply(c, m), c, m.name);
    log::info("store_migration_applied", {{"kind", "postgres"}, {"version", m.version}, {"name", m.name}});
  }
  check(tx.commit(), c, "COMMIT");
}

// ---- helpers ----------------------------------------------------------------
// Times go in as RFC 3339 text with microseconds and "Z" (exact, independent of
// the session's TimeZone) and come out as integer microseconds (extract() is
// numeric since PostgreSQL 14, so exact too). Ids are ordered bytewise
// (COLLATE "C"), as in SQLite, whatever the database's collation.

std::string ts(SystemTime t) { return to_rfc3339(t); }

error_code read_owner(Connection& c, const char* sql, const std::string& session_id,
                      std::optional<std::string>& owner) {
  Rows rows;
  auto ec = c.exec(sql, {session_id}, &rows);
  owner = !ec && !rows.empty() ? std::optional(rows.text(0, 0)) : std::nullopt;
  return ec;
}

constexpr const char* kOwner = "SELECT user_id FROM chat_sessions WHERE session_id = $1";
// Row locks that serialize writers of one session: messages may be added (NO KEY
// UPDATE) while nobody deletes the session (UPDATE).
constexpr const char* kOwnerForMessage = "SELECT user_id FROM chat_sessions WHERE session_id = $1 FOR NO KEY UPDATE";
constexpr const char* kOwnerForDelete = "SELECT user_id FROM chat_sessions WHERE session_id = $1 FOR UPDATE";

error_code check_owner(Connection& c, const char* sql, const std::string& session_id, const std::string& user_id) {
  std::optional<std::string> owner;
  if (auto ec = read_owner(c, sql, session_id, owner)) return ec;
  if (!owner) return Errc::not_found;
  return *owner == user_id ? error_code{} : make_error_code(Errc::forbidden);
}

error_code claim_session(Connection& c, const NewUserMessage& m) {
  auto ec = c.exec(
      "INSERT INTO chat_sessions (session_id, user_id, title, ai_provider, model_name, created_at, updated_at, "
      "last_message_at) VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $6::timestamptz, $6::timestamptz) "
      "ON CONFLICT (session_id) DO NOTHING",
      {m.session_id, m.user_id, make_title(m.content), m.ai_provider, m.model, ts(m.created_at)});
  return ec ? ec : check_owner(c, kOwnerForMessage, m.session_id, m.user_id);
}

// Clocks move forward only: replies of two pods may land out of order.
error_code touch_session(Connection& c, const std::string& session_id, SystemTime at, std::string_view provider,
                         std::string_view model) {
  return c.exec(
      "UPDATE chat_sessions SET updated_at = greatest(updated_at, $2::timestamptz), "
      "last_message_at = greatest(last_message_at, $2::timestamptz), "
      "ai_provider = coalesce(nullif($3, ''), ai_provider), model_name = coalesce(nullif($4, ''), model_name) "
      "WHERE session_id = $1",
      {session_id, ts(at), provider, model});
}

error_code read_history(Connection& c, const NewUserMessage& m, unsigned turns,
                        std::vector<protocol::HistoryEntry>& out) {
  if (turns == 0) return {};
  Rows rows;
  auto ec = c.exec(
      "SELECT role, content FROM (SELECT role, content, created_at, message_id FROM messages "
      "WHERE session_id = $1 AND message_id <> $2 ORDER BY created_at DESC, message_id COLLATE \"C\" DESC LIMIT $3) "
      "AS recent ORDER BY created_at, message_id COLLATE \"C\"",
      {m.session_id, m.message_id, std::to_string(turns)}, &rows);
  for (int i = 0; i < rows.size(); ++i) out.push_back({rows.text(i, 0), rows.text(i, 1)});
  return ec;
}

constexpr const char* kInsertMessage =
    "INSERT INTO messages (message_id, session_id, role, content, token_count, status, metadata, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::timestamptz) ON CONFLICT (message_id) DO NOTHING";

constexpr const char* kMessageColumns =
    "SELECT message_id, session_id, role, content, token_count, status, metadata::text, "
    "(extract(epoch FROM created_at) * 1000000)::bigint FROM messages ";

StoredMessage read_message(const Rows& r, int i) {
  return StoredMessage{r.text(i, 0),    r.text(i, 1), r.text(i, 2), r.text(i, 3),
                       r.integer(i, 4), r.text(i, 5), r.text(i, 6), detail::from_micros(r.integer(i, 7))};
}

// The cursor is a message id of this session; its position is (created_at, message_id).
error_code read_page(Connection& c, const std::string& session_id, std::size_t limit, const std::string& before,
                     MessagePage& page) {
  static const std::string kFirst = std::string(kMessageColumns) +
                                    "WHERE session_id = $1 ORDER BY created_at DESC, message_id COLLATE \"C\" DESC "
                                    "LIMIT $2";
  static const std::string kOlder =
      std::string(kMessageColumns) +
      "WHERE session_id = $1 AND (created_at, message_id COLLATE \"C\") < "
      "(SELECT created_at, message_id FROM messages WHERE message_id = $3) "
      "ORDER BY created_at DESC, message_id COLLATE \"C\" DESC LIMIT $2";
  Rows rows;
  auto n = std::to_string(limit + 1);  // one more than asked: tells whether an older page exists
  if (before.empty()) {
    if (auto ec = c.exec(kFirst.c_str(), {session_id, n}, &rows)) return ec;
  } else {
    Rows cursor;
    auto ec = c.exec("SELECT 1 FROM messages WHERE message_id = $1 AND session_id = $2", {before, session_id}, &cursor);
    if (ec) return ec;
    if (cursor.empty()) return Errc::not_found;
    if (auto ec2 = c.exec(kOlder.c_str(), {session_id, n, before}, &rows)) return ec2;
  }
  for (int i = 0; i < rows.size(); ++i) page.messages.push_back(read_message(rows, i));
  if (page.messages.size() > limit) {
    page.messages.pop_back();
    page.next_before = page.messages.back().message_id;
  }
  std::reverse(page.messages.begin(), page.messages.end());
  return {};
}

// ---- operations (each one attempt, re-runnable) ---------------------------

error_code accept(Connection& c, const NewUserMessage& m, unsigned turns, std::vector<protocol::HistoryEntry>& out) {
  pg::Transaction tx(c);
  if (tx.error()) return tx.error();
  if (auto ec = claim_session(c, m)) return ec;
  if (auto ec = read_history(c, m, turns, out)) return ec;
  auto ec = c.exec(kInsertMessage,
                   {m.message_id, m.session_id, "user", m.content, "0", "complete", "{}", ts(m.created_at)});
  if (ec) return ec;
  if (auto ec2 = touch_session(c, m.session_id, m.created_at, m.ai_provider, m.model)) return ec2;
  return tx.commit();
}

// Insert-if-absent and the session's clocks in one transaction. A session that
// is gone (deleted while the reply streamed) is a foreign-key error: not_found.
error_code save_assistant(Connection& c, const AssistantMessage& m) {
  pg::Transaction tx(c);
  if (tx.error()) return tx.error();
  Rows rows;
  auto ec = c.exec(kInsertMessage,
                   {m.message_id, m.session_id, "assistant", m.content, std::to_string(m.token_count), m.status,
                    m.metadata_json, ts(m.created_at)},
                   &rows);
  if (ec) return ec;
  if (rows.affected() == 1) {
    if (auto ec2 = touch_session(c, m.session_id, m.created_at, {}, {})) return ec2;
  }
  return tx.commit();
}

// Undoes accept: the user message goes, and so does a session it alone created.
// The session row is locked first so a message accepted meanwhile is seen.
error_code discard(Connection& c, const std::string& message_id) {
  pg::Transaction tx(c);
  if (tx.error()) return tx.error();
  Rows rows;
  if (auto ec = c.exec("SELECT session_id FROM messages WHERE message_id = $1 AND role = 'user'", {message_id}, &rows))
    return ec;
  if (rows.empty()) return Errc::not_found;
  std::string session_id = rows.text(0, 0);
  std::optional<std::string> owner;
  if (auto ec = read_owner(c, kOwnerForDelete, session_id, owner)) return ec;
  if (auto ec = c.exec("DELETE FROM messages WHERE message_id = $1", {message_id})) return ec;
  for (const char* sql : {"DELETE FROM chat_sessions WHERE session_id = $1 AND "
                          "NOT EXISTS (SELECT 1 FROM messages WHERE session_id = $1)",
                          "UPDATE chat_sessions SET last_message_at = "
                          "(SELECT max(created_at) FROM messages WHERE session_id = $1) WHERE session_id = $1"}) {
    if (auto ec = c.exec(sql, {session_id})) return ec;
  }
  return tx.commit();
}

SessionSummary read_session(const Rows& r, int i) {
  return SessionSummary{r.text(i, 0),
                        r.text(i, 1),
                        r.text(i, 2),
                        r.text(i, 3),
                        r.text(i, 4),
                        detail::from_micros(r.integer(i, 5)),
                        detail::from_micros(r.integer(i, 6)),
                        detail::from_micros(r.integer(i, 7))};
}

error_code sessions_of(Connection& c, const std::string& user_id, std::size_t limit, std::vector<SessionSummary>& out) {
  Rows rows;
  auto ec = c.exec(
      "SELECT session_id, user_id, title, ai_provider, model_name, (extract(epoch FROM created_at) * 1000000)::bigint, "
      "(extract(epoch FROM updated_at) * 1000000)::bigint, (extract(epoch FROM last_message_at) * 1000000)::bigint "
      "FROM chat_sessions WHERE user_id = $1 ORDER BY last_message_at DESC, session_id COLLATE \"C\" DESC LIMIT $2",
      {user_id, std::to_string(detail::clamp_limit(limit))}, &rows);
  for (int i = 0; i < rows.size(); ++i) out.push_back(read_session(rows, i));
  return ec;
}

error_code page_of(Connection& c, const std::string& session_id, const std::string& user_id, std::size_t limit,
                   const std::string& before, MessagePage& page) {
  // One snapshot for the owner check, the cursor and the page.
  pg::Transaction tx(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (tx.error()) return tx.error();
  if (auto ec = check_owner(c, kOwner, session_id, user_id)) return ec;
  if (auto ec = read_page(c, session_id, detail::clamp_limit(limit), before, page)) return ec;
  return tx.commit();
}

error_code remove_session(Connection& c, const std::string& session_id, const std::string& user_id) {
  pg::Transaction tx(c);
  if (tx.error()) return tx.error();
  if (auto ec = check_owner(c, kOwnerForDelete, session_id, user_id)) return ec;
  if (auto ec = c.exec("DELETE FROM messages WHERE session_id = $1", {session_id})) return ec;
  if (auto ec = c.exec("DELETE FROM chat_sessions WHERE session_id = $1", {session_id})) return ec;
  return tx.commit();
}

// ---- jobs -----------------------------------------------------------------

struct Job {
  std::uint64_t seq = 0;
  pg::Attempt attempt;  // empty: no database work (a flush marker)
  std::function<void(error_code)> complete;
  bool retry_when_down = false;  // assistant replies wait out an outage
  std::string message_id;        // for the logs of deferred replies
};

struct Deferred {
  pg::Attempt attempt;
  std::string message_id;
};

struct FlushWaiter {
  std::uint64_t seq;  // done once no job older than this is pending
  DoneCallback done;
};

}  // namespace

struct PostgresStore::Impl {
  explicit Impl(const config::StoreConfig& cfg)
      : params(cfg), queue(cfg.queue_limit), retry_limit(std::max<std::size_t>(cfg.queue_limit, 1)) {
    open_pool(std::max(cfg.pool_size, 1u));
    for (auto& link : links) workers.emplace_back([this, l = link.get()] { work(*l); });
    retrier = std::thread([this] { retry_loop(); });
  }

  ~Impl() {
    queue.close();
    for (auto& t : workers) t.join();  // the queued jobs still run (failing fast when the server is down)
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    retry_cv.notify_all();
    retrier.join();
    release_waiters(make_error_code(Errc::unavailable));
  }

  void open_pool(unsigned size) {
    for (unsigned i = 0; i < size; ++i) links.push_back(std::make_unique<pg::Link>(params, &healthy));
    if (!links.front()->connect_now()) {
      throw std::runtime_error("cannot connect to PostgreSQL (" + params.describe() +
                               "): " + links.front()->error_message());
    }
    migrate(links.front()->connection());
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
    error_code ec = job.attempt ? link.run(job.attempt) : error_code{};
    if (ec == Errc::unavailable && job.retry_when_down) ec = defer(std::move(job.attempt), job.message_id);
    job.complete(ec);
    finish(job.seq);
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
  void enqueue(DoneCallback done, Body body, std::string retry_id = {}) {
    Job job;
    job.attempt = std::move(body);
    job.complete = [done](error_code ec) { detail::invoke(done, ec); };
    job.retry_when_down = !retry_id.empty();
    job.message_id = std::move(retry_id);
    if (!submit(std::move(job))) detail::invoke(done, make_error_code(Errc::overloaded));
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
    {
      std::lock_guard lock(mu);
      std::erase_if(waiters, [seq](const FlushWaiter& w) { return w.seq == seq; });
    }
    finish(seq);
    detail::invoke(done, make_error_code(Errc::overloaded));
  }

  void finish(std::uint64_t seq) {
    std::vector<DoneCallback> ready;
    {
      std::lock_guard lock(mu);
      pending.erase(seq);
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

  // ---- the retry queue ----

  error_code defer(pg::Attempt attempt, const std::string& message_id) {
    std::size_t queued;
    {
      std::lock_guard lock(mu);
      if (retry.size() >= retry_limit) {
        log::error("store_retry_queue_full", {{"message_id", message_id}, {"limit", retry_limit}});
        return Errc::unavailable;
      }
      retry.push_back({std::move(attempt), message_id});
      queued = retry.size();
    }
    retry_cv.notify_one();
    log::warn("store_write_deferred", {{"message_id", message_id}, {"queued", queued}});
    return {};
  }

  // Writes deferred replies oldest first on a connection of its own, so the pool
  // keeps serving reads meanwhile. An entry leaves the queue only once written
  // (or refused for good), which is what flush() waits for.
  void retry_loop() {
    pg::Link link(params, nullptr);
    auto backoff = pg::kMinBackoff;
    std::unique_lock lock(mu);
    for (;;) {
      retry_cv.wait(lock, [&] { return stopping || !retry.empty(); });
      if (retry.empty()) return;
      Deferred entry = retry.front();
      lock.unlock();
      auto ec = link.run(entry.attempt);
      lock.lock();
      if (ec == Errc::unavailable) {
        if (stopping) return drop_deferred(lock);
        retry_cv.wait_for(lock, backoff, [&] { return stopping; });
        backoff = std::min(backoff * 2, pg::kMaxBackoff);
        continue;
      }
      backoff = pg::kMinBackoff;
      retry.pop_front();
      log_retried(entry.message_id, ec);
      // Outages are rare: hold the extra connection only while there is a backlog.
      if (retry.empty()) link.close();
      auto ready = take_ready_waiters();
      lock.unlock();
      for (auto& done : ready) detail::invoke(done, error_code{});
      lock.lock();
    }
  }

  static void log_retried(const std::string& message_id, error_code ec) {
    if (ec) {
      log::error("store_deferred_write_failed", {{"message_id", message_id}, {"error", ec.message()}});
    } else {
      log::info("store_deferred_write_done", {{"message_id", message_id}});
    }
  }

  // Shutting down with the server still away: these replies are lost; say which.
  void drop_deferred(std::unique_lock<std::mutex>& lock) {
    std::deque<Deferred> lost;
    lost.swap(retry);
    lock.unlock();
    for (const auto& entry : lost) log::error("store_retry_dropped", {{"message_id", entry.message_id}});
  }

  pg::ConnectParams params;
  WorkQueue<Job> queue;
  std::atomic<int> healthy{0};
  std::vector<std::unique_ptr<pg::Link>> links;
  std::vector<std::thread> workers;
  std::thread retrier;

  std::mutex mu;  // guards everything below
  std::condition_variable retry_cv;
  std::uint64_t next_seq = 0;
  std::set<std::uint64_t> pending;  // queued or running jobs
  std::vector<FlushWaiter> waiters;
  std::deque<Deferred> retry;
  const std::size_t retry_limit;
  bool stopping = false;
};

PostgresStore::PostgresStore(const config::StoreConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {
  log::info("store_opened", {{"kind", "postgres"},
                             {"server", impl_->params.describe()},
                             {"pool_size", cfg.pool_size},
                             {"queue_limit", cfg.queue_limit}});
}

PostgresStore::~PostgresStore() = default;

ComponentStatus PostgresStore::status() const { return {"postgres", false, impl_->healthy.load() > 0}; }

void PostgresStore::accept_user_message(NewUserMessage m, unsigned history_turns, HistoryCallback done) {
  impl_->enqueue(std::move(done), [m = std::move(m), history_turns](Connection& c, auto& history) {
    return accept(c, m, history_turns, history);
  });
}

void PostgresStore::discard_message(std::string message_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(message_id)](Connection& c) { return discard(c, id); });
}

void PostgresStore::save_assistant_message(AssistantMessage m, DoneCallback done) {
  auto id = m.message_id;
  impl_->enqueue(
      std::move(done), [m = detail::normalised(std::move(m))](Connection& c) { return save_assistant(c, m); },
      id.empty() ? std::string("(no id)") : std::move(id));
}

void PostgresStore::session_owner(std::string session_id, OwnerCallback done) {
  impl_->enqueue(std::move(done), [id = std::move(session_id)](Connection& c, std::optional<std::string>& owner) {
    return read_owner(c, kOwner, id, owner);
  });
}

void PostgresStore::list_sessions(std::string user_id, std::size_t limit, SessionsCallback done) {
  impl_->enqueue(std::move(done), [user = std::move(user_id), limit](Connection& c, auto& out) {
    return sessions_of(c, user, limit, out);
  });
}

void PostgresStore::list_messages(std::string session_id, std::string user_id, std::size_t limit, std::string before,
                                  PageCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id), limit,
                                   before = std::move(before)](Connection& c, MessagePage& page) {
    return page_of(c, session, user, limit, before, page);
  });
}

void PostgresStore::delete_session(std::string session_id, std::string user_id, DoneCallback done) {
  impl_->enqueue(std::move(done), [session = std::move(session_id), user = std::move(user_id)](Connection& c) {
    return remove_session(c, session, user);
  });
}

void PostgresStore::flush(DoneCallback done) { impl_->flush(std::move(done)); }

}  // namespace chat::store
