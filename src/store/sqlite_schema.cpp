#include "store/sqlite_schema.hpp"

#include <chrono>
#include <filesystem>
#include <stdexcept>

#include "log/log.hpp"
#include "store/store_detail.hpp"

namespace chat::store::sqlite {
namespace {

using boost::system::error_code;

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

}  // namespace

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

}  // namespace chat::store::sqlite
