#pragma once
// Thin RAII layer over the sqlite3 C API for SqliteStore: one owner per handle,
// SQLite result codes turned into error_codes in one place. Not thread-safe: a
// Connection belongs to one thread at a time (the store's worker).

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace chat::store::sqlite {

struct CloseDb {
  void operator()(sqlite3* db) const noexcept;
};
struct FinalizeStmt {
  void operator()(sqlite3_stmt* stmt) const noexcept;
};
using DbHandle = std::unique_ptr<sqlite3, CloseDb>;
using StmtHandle = std::unique_ptr<sqlite3_stmt, FinalizeStmt>;

// SQLITE_CONSTRAINT and friends → errc::invalid_argument; a file that cannot be
// read or written (busy, I/O, full, read-only) → Errc::unavailable; anything else
// → errc::io_error. Logs SQLite's own message, since the code loses it.
boost::system::error_code map_error(int rc, sqlite3* db, std::string_view what);

// A cached prepared statement in use: parameters are bound in order (?1, ?2, …)
// and the statement is reset when the Query ends, ready for the next user.
// After any failure every call is a no-op and error() says what went wrong.
class Query {
 public:
  Query(sqlite3_stmt* stmt, sqlite3* db, boost::system::error_code prepare_error);
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query();

  Query& bind(std::string_view value);
  Query& bind(std::int64_t value);
  Query& bind_null();

  // True when a row is ready; false at the end or on error.
  bool next();
  // Runs a statement that returns no rows.
  boost::system::error_code run();
  boost::system::error_code error() const { return ec_; }

  std::string text(int column) const;
  std::int64_t integer(int column) const;

 private:
  void check_bind(int rc);

  sqlite3_stmt* stmt_;
  sqlite3* db_;
  int next_index_ = 1;
  boost::system::error_code ec_;
};

class Connection {
 public:
  // Opens (creating) the database file with the pragmas the store relies on:
  // WAL, foreign keys, a busy timeout for other processes on the same file.
  // Throws std::runtime_error naming the path.
  static Connection open(const std::string& path);

  // For statements without parameters: pragmas, DDL, BEGIN/COMMIT.
  boost::system::error_code exec(const char* sql);
  // Prepared once per connection and reused (the hot statements run per message).
  Query query(const std::string& sql);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  int changes() const;
  // Inside BEGIN … COMMIT.
  bool in_transaction() const;

 private:
  explicit Connection(DbHandle db) : db_(std::move(db)) {}

  DbHandle db_;
  std::unordered_map<std::string, StmtHandle> statements_;
};

// BEGIN … COMMIT, rolled back when it ends uncommitted (any early return).
// Writers take the lock up front (BEGIN IMMEDIATE): a deferred transaction that
// upgrades later can fail with SQLITE_BUSY without waiting, when another process
// writes the same file. Inside an open transaction (the store thread runs
// waiting jobs in one) it is a savepoint: committed, its statements stay for
// the outer COMMIT; uncommitted, they are rolled back alone.
class Transaction {
 public:
  enum class Mode { read, write };
  Transaction(Connection& db, Mode mode);
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  boost::system::error_code error() const { return begin_error_; }
  boost::system::error_code commit();

 private:
  Connection& db_;
  boost::system::error_code begin_error_;
  bool open_ = false;
  bool savepoint_ = false;
};

}  // namespace chat::store::sqlite
