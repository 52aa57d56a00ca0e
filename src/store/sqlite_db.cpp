#include "store/sqlite_db.hpp"

#include <sqlite3.h>

#include <chrono>
#include <climits>
#include <stdexcept>
#include <thread>

#include "log/log.hpp"
#include "store/message_store.hpp"

namespace chat::store::sqlite {
namespace {

// Another process (a second chatd on the same file, a backup) may hold the write
// lock briefly; waiting this long beats failing the request.
constexpr int kBusyTimeoutMs = 5000;

boost::system::error_code classify(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
      return boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return make_error_code(Errc::unavailable);
    default:
      return boost::system::errc::make_error_code(boost::system::errc::io_error);
  }
}

// Returns the journal mode in effect after asking for WAL ("" on error).
std::string request_wal(sqlite3* db, int& rc) {
  sqlite3_stmt* raw = nullptr;
  rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
  StmtHandle stmt(raw);
  if (rc != SQLITE_OK) return {};
  rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) return {};
  rc = SQLITE_OK;
  auto* mode = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
  return mode != nullptr ? mode : "";
}

// Switching a new file to WAL needs a moment of exclusive access, and SQLite
// neither waits for it through the busy handler nor always reports failing
// (it answers the old mode). Processes creating the file together retry here.
void enable_wal(sqlite3* db, const std::string& path) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (;;) {
    int rc = SQLITE_OK;
    if (request_wal(db, rc) == "wal") return;
    bool busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED || rc == SQLITE_OK;
    if (!busy || std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("cannot switch SQLite database " + path + " to WAL: " + sqlite3_errmsg(db));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

void CloseDb::operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
void FinalizeStmt::operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }

boost::system::error_code map_error(int rc, sqlite3* db, std::string_view what) {
  log::warn("store_sqlite_error", {{"what", what},
                                   {"code", rc},
                                   {"message", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)}});
  return classify(rc);
}

Query::Query(sqlite3_stmt* stmt, sqlite3* db, boost::system::error_code prepare_error)
    : stmt_(stmt), db_(db), ec_(prepare_error) {}

Query::~Query() {
  if (stmt_ == nullptr) return;
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

void Query::check_bind(int rc) {
  if (rc != SQLITE_OK) ec_ = map_error(rc, db_, "bind");
  ++next_index_;
}

Query& Query::bind(std::string_view value) {
  if (ec_) return *this;
  // SQLITE_TRANSIENT: SQLite copies the text, so the caller's string may go away.
  if (value.size() > static_cast<std::size_t>(INT_MAX)) {
    ec_ = boost::system::errc::make_error_code(boost::system::errc::value_too_large);
    return *this;
  }
  check_bind(sqlite3_bind_text(stmt_, next_index_, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT));
  return *this;
}

Query& Query::bind(std::int64_t value) {
  if (!ec_) check_bind(sqlite3_bind_int64(stmt_, next_index_, value));
  return *this;
}

Query& Query::bind_null() {
  if (!ec_) check_bind(sqlite3_bind_null(stmt_, next_index_));
  return *this;
}

bool Query::next() {
  if (ec_) return false;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) ec_ = map_error(rc, db_, sqlite3_sql(stmt_));
  return false;
}

boost::system::error_code Query::run() {
  while (next()) {
  }
  return ec_;
}

std::string Query::text(int column) const {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

std::int64_t Query::integer(int column) const { return sqlite3_column_int64(stmt_, column); }

Connection Connection::open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  DbHandle db(raw);  // sqlite3_open_v2 hands out a handle even on failure; it must be closed
  if (rc != SQLITE_OK) {
    throw std::runtime_error("cannot open SQLite database " + path + ": " +
                             (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  Connection conn(std::move(db));
  // WAL: readers never block the writer. NORMAL sync is durable across a crash of
  // the process (the WAL is fsynced at checkpoints); only a power cut may lose the
  // last commits. foreign_keys is per connection and off by default.
  enable_wal(conn.db_.get(), path);
  for (const char* pragma : {"PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"}) {
    if (conn.exec(pragma)) throw std::runtime_error("cannot configure SQLite database " + path + " (" + pragma + ")");
  }
  return conn;
}

boost::system::error_code Connection::exec(const char* sql) {
  char* message = nullptr;
  int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &message);
  sqlite3_free(message);  // the same text is still available from sqlite3_errmsg
  return rc == SQLITE_OK ? boost::system::error_code{} : map_error(rc, db_.get(), sql);
}

Query Connection::query(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                &raw, nullptr);
    StmtHandle stmt(raw);
    if (rc != SQLITE_OK) return Query(nullptr, db_.get(), map_error(rc, db_.get(), sql));
    it = statements_.emplace(sql, std::move(stmt)).first;
  }
  return Query(it->second.get(), db_.get(), {});
}

int Connection::changes() const { return sqlite3_changes(db_.get()); }

bool Connection::in_transaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }

Transaction::Transaction(Connection& db, Mode mode) : db_(db), savepoint_(db.in_transaction()) {
  if (savepoint_) begin_error_ = db_.query("SAVEPOINT job").run();
  else begin_error_ = db_.exec(mode == Mode::write ? "BEGIN IMMEDIATE" : "BEGIN");
  open_ = !begin_error_;
}

Transaction::~Transaction() {
  if (!open_) return;
  if (!savepoint_) {
    db_.exec("ROLLBACK");
    return;
  }
  // ROLLBACK TO keeps the savepoint open; RELEASE ends it.
  db_.query("ROLLBACK TO job").run();
  db_.query("RELEASE job").run();
}

boost::system::error_code Transaction::commit() {
  if (!open_) return begin_error_ ? begin_error_ : make_error_code(Errc::unavailable);
  auto ec = savepoint_ ? db_.query("RELEASE job").run() : db_.exec("COMMIT");
  // A failed COMMIT (SQLITE_BUSY) leaves the transaction open: the destructor rolls it back.
  open_ = static_cast<bool>(ec);
  return ec;
}

}  // namespace chat::store::sqlite
