#include "store/pg_schema.hpp"

#include <stdexcept>
#include <string>
#include <vector>

#include "log/log.hpp"

namespace chat::store::pg {
namespace {

using boost::system::error_code;

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

}  // namespace

// Pods starting together queue on the advisory lock, so exactly one applies each
// migration and the others find it recorded. The lock ends with the transaction,
// and PostgreSQL's DDL is transactional: a failed migration leaves nothing behind.
void migrate(Connection& c) {
  Transaction tx(c);
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

}  // namespace chat::store::pg
