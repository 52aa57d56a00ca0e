#pragma once
// Thin RAII layer over libpq for PostgresStore: one owner per PGconn/PGresult,
// libpq statuses and SQLSTATEs turned into error_codes in one place, statements
// always sent with parameters (PQexecParams), never spliced into the SQL text.
// A Connection belongs to one thread at a time.

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <string_view>
#include <vector>

#include "config/config.hpp"

struct pg_conn;
struct pg_result;

namespace chat::store::pg {

struct FinishConn {
  void operator()(pg_conn* conn) const noexcept;
};
struct ClearResult {
  void operator()(pg_result* result) const noexcept;
};
using ConnHandle = std::unique_ptr<pg_conn, FinishConn>;
using ResultHandle = std::unique_ptr<pg_result, ClearResult>;

// Rows of a finished statement, read as text.
class Rows {
 public:
  Rows() = default;
  explicit Rows(ResultHandle result) : result_(std::move(result)) {}
  int size() const;
  bool empty() const { return size() == 0; }
  std::string text(int row, int column) const;
  std::int64_t integer(int row, int column) const;
  // Rows changed by an INSERT/UPDATE/DELETE.
  std::int64_t affected() const;

 private:
  ResultHandle result_;
};

// The connection settings as libpq keyword/value arrays (PQconnectdbParams):
// every value is passed as is, so quotes, spaces or '=' in a password cannot
// change the meaning of the others. The password never appears in describe().
class ConnectParams {
 public:
  explicit ConnectParams(const config::StoreConfig& cfg);
  const char* const* keywords() const { return keywords_.data(); }
  const char* const* values() const { return values_.data(); }
  // "host=… port=… dbname=… user=… sslmode=…" for logs.
  const std::string& describe() const { return description_; }

 private:
  void add(const char* keyword, std::string value);

  std::vector<std::string> owned_;  // values, kept alive for the pointer arrays
  std::vector<const char*> keywords_;
  std::vector<const char*> values_;
  std::string description_;
};

class Connection {
 public:
  explicit Connection(const ConnectParams& params) : params_(params) {}

  // Opens a new session (closing the old one). On failure error_message() says why.
  bool connect();
  void close() { conn_.reset(); }
  // False once libpq has seen the socket die (or before connect()).
  bool ok() const;
  // Reads whatever the server sent on an idle connection, so a server that shut
  // down is noticed before the next job. Returns ok().
  bool poll();
  const std::string& error_message() const { return last_error_; }

  // Runs one statement with text parameters; `sql` must be a string literal
  // (with parameters it keys the statement prepared for it). Errors: Errc::unavailable when the
  // connection is lost or the server is shutting down, Errc::not_found for a
  // foreign-key violation, errc::invalid_argument for values the schema rejects,
  // errc::io_error for anything else (logged with its SQLSTATE).
  boost::system::error_code exec(const char* sql, std::initializer_list<std::string_view> params, Rows* rows = nullptr);
  boost::system::error_code exec(const char* sql, Rows* rows = nullptr) { return exec(sql, {}, rows); }

 private:
  boost::system::error_code fail(pg_result* result, const char* sql);

  // The statement's name on this session, preparing it on first use.
  const char* prepared(const char* sql, std::size_t n_params, boost::system::error_code& ec);

  const ConnectParams& params_;
  ConnHandle conn_;
  std::string last_error_;
  // Statements with parameters are prepared once per session, keyed by their
  // text's address (they are literals): PostgreSQL then parses and plans each
  // once, not on every chat (most of its CPU per stored message before).
  std::unordered_map<const char*, std::string> prepared_;
};

// BEGIN … COMMIT, rolled back when it ends uncommitted (any early return).
class Transaction {
 public:
  explicit Transaction(Connection& conn, const char* begin = "BEGIN");
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  boost::system::error_code error() const { return begin_error_; }
  boost::system::error_code commit();

 private:
  Connection& conn_;
  boost::system::error_code begin_error_;
  bool open_ = false;
};

}  // namespace chat::store::pg
