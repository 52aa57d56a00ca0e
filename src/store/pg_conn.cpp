#include "store/pg_conn.hpp"

#include <libpq-fe.h>

#include <charconv>
#include <cstring>

#include "log/log.hpp"
#include "store/message_store.hpp"

namespace chat::store::pg {
namespace {

using boost::system::error_code;

// libpq's messages span lines ("server closed the connection unexpectedly\n\tThis
// probably means…"); a log field reads better as one line.
std::string one_line(const char* text) {
  std::string out;
  for (const char* p = text != nullptr ? text : ""; *p != '\0'; ++p) {
    bool space = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
    if (!space) {
      out.push_back(*p);
    } else if (!out.empty() && out.back() != ' ') {
      out.push_back(' ');
    }
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// libpq prints NOTICEs ("relation already exists, skipping") to stderr by default.
void route_notice(void*, const char* message) { log::debug("store_pg_notice", {{"message", one_line(message)}}); }

// SQLSTATE → our codes. An outage, which the store waits out (a reply goes to
// the retry queue, the connection is opened again): the server going away
// (class 08 connection exception, 57P01..57P03 shutdown / starting up), out of
// resources (class 53, such as too many connections), read-only (25006: a
// connection that reached a standby after a failover), a transaction rolled
// back for a conflict (class 40: serialization failure, deadlock), a lock or
// statement timeout or a cancel (55P03, 57014). The rest is final.
bool transient(std::string_view state) {
  return state.starts_with("08") || state.starts_with("53") || state.starts_with("40") || state == "57P01" ||
         state == "57P02" || state == "57P03" || state == "25006" || state == "55P03" || state == "57014";
}

error_code classify(std::string_view state) {
  if (transient(state)) return make_error_code(Errc::unavailable);
  if (state == "23503") return make_error_code(Errc::not_found);  // foreign key: the session is gone
  if (state.starts_with("23") || state.starts_with("22"))
    return boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
  return boost::system::errc::make_error_code(boost::system::errc::io_error);
}

}  // namespace

void FinishConn::operator()(pg_conn* conn) const noexcept { PQfinish(conn); }
void ClearResult::operator()(pg_result* result) const noexcept { PQclear(result); }

int Rows::size() const { return result_ ? PQntuples(result_.get()) : 0; }

std::string Rows::text(int row, int column) const {
  return std::string(PQgetvalue(result_.get(), row, column),
                     static_cast<std::size_t>(PQgetlength(result_.get(), row, column)));
}

std::int64_t Rows::integer(int row, int column) const {
  const char* p = PQgetvalue(result_.get(), row, column);
  std::int64_t value = 0;
  std::from_chars(p, p + std::strlen(p), value);
  return value;
}

std::int64_t Rows::affected() const {
  const char* p = result_ ? PQcmdTuples(result_.get()) : "";
  std::int64_t value = 0;
  std::from_chars(p, p + std::strlen(p), value);
  return value;
}

ConnectParams::ConnectParams(const config::StoreConfig& cfg) {
  std::vector<std::pair<const char*, std::string>> settings = {
      {"host", cfg.host.value_or("localhost")},
      {"port", std::to_string(cfg.port)},
      {"dbname", cfg.name},
      {"user", cfg.user},
      {"password", cfg.password},
      {"sslmode", cfg.sslmode},
      // Fail an attempt quickly when the host is unreachable: jobs wait behind it.
      {"connect_timeout", "5"},
      {"application_name", "chatd"},
      // A peer that vanished without closing (node lost, partition) is detected
      // in about a minute instead of TCP's default two hours: by keepalives on
      // a connection whose last data the server took (idle, or waiting for a
      // result), and by tcp_user_timeout on one whose data it never took (sent
      // during the partition), which TCP would otherwise retransmit for ~15 min.
      {"keepalives", "1"},
      {"keepalives_idle", "30"},
      {"keepalives_interval", "10"},
      {"keepalives_count", "3"},
      {"tcp_user_timeout", "60000"},
  };
  owned_.reserve(settings.size());  // no reallocation: values_ points into these strings
  for (auto& [keyword, value] : settings) {
    owned_.push_back(std::move(value));
    keywords_.push_back(keyword);
    values_.push_back(owned_.back().c_str());
  }
  keywords_.push_back(nullptr);
  values_.push_back(nullptr);
  description_ = "host=" + cfg.host.value_or("localhost") + " port=" + std::to_string(cfg.port) +
                 " dbname=" + cfg.name + " user=" + cfg.user + " sslmode=" + cfg.sslmode;
}

bool Connection::connect() {
  // expand_dbname=0: dbname is a name, never parsed as a connection string.
  conn_.reset(PQconnectdbParams(params_.keywords(), params_.values(), 0));
  prepared_.clear();  // statements belong to the session that prepared them
  if (conn_ && PQstatus(conn_.get()) == CONNECTION_OK) {
    PQsetNoticeProcessor(conn_.get(), &route_notice, nullptr);
    last_error_.clear();
    return true;
  }
  // libpq's messages name host and user but never the password.
  last_error_ = conn_ ? one_line(PQerrorMessage(conn_.get())) : "out of memory";
  conn_.reset();
  return false;
}

bool Connection::ok() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }

bool Connection::poll() {
  if (!ok()) return false;
  // A server shutting down sends a FATAL notice and closes the socket; reading
  // the EOF is what turns the status to CONNECTION_BAD.
  if (PQconsumeInput(conn_.get()) == 0) last_error_ = one_line(PQerrorMessage(conn_.get()));
  return ok();
}

error_code Connection::exec(const char* sql, std::initializer_list<std::string_view> params, Rows* rows) {
  if (!ok()) return Errc::unavailable;
  // Text parameters are NUL-terminated, and PostgreSQL text cannot hold NUL:
  // refuse rather than silently cut the value.
  std::vector<std::string> values;
  values.reserve(params.size());
  for (auto p : params) {
    if (p.find('\0') != std::string_view::npos)
      return boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
    values.emplace_back(p);
  }
  std::vector<const char*> pointers;
  pointers.reserve(values.size());
  for (const auto& v : values) pointers.push_back(v.c_str());
  ResultHandle result;
  if (pointers.empty()) {
    result.reset(PQexecParams(conn_.get(), sql, 0, nullptr, nullptr, nullptr, nullptr, 0));
  } else {
    error_code ec;
    const char* name = prepared(sql, pointers.size(), ec);
    if (ec) return ec;
    result.reset(PQexecPrepared(conn_.get(), name, static_cast<int>(pointers.size()), pointers.data(), nullptr,
                                nullptr, 0));
  }
  auto status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return fail(result.get(), sql);
  if (rows != nullptr) *rows = Rows(std::move(result));
  return {};
}

const char* Connection::prepared(const char* sql, std::size_t n_params, error_code& ec) {
  if (auto it = prepared_.find(sql); it != prepared_.end()) return it->second.c_str();
  auto name = "chat_" + std::to_string(prepared_.size());
  ResultHandle result(PQprepare(conn_.get(), name.c_str(), sql, static_cast<int>(n_params), nullptr));
  if (!result || PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
    ec = fail(result.get(), sql);
    return nullptr;
  }
  return prepared_.emplace(sql, std::move(name)).first->second.c_str();
}

error_code Connection::fail(pg_result* result, const char* sql) {
  if (!ok()) {
    last_error_ = one_line(PQerrorMessage(conn_.get()));
    return Errc::unavailable;
  }
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  auto ec = classify(state != nullptr ? state : "");
  // The primary message only: DETAIL and CONTEXT quote the row and the
  // parameters, i.e. users' messages, which do not belong in logs.
  const char* primary = result != nullptr ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  // A reply for a deleted session is expected traffic, not a problem.
  auto level = ec == Errc::not_found ? log::Level::debug : log::Level::warn;
  if (log::enabled(level)) {
    log::write(level, "store_pg_error",
               {{"sqlstate", state != nullptr ? state : ""},
                {"message", one_line(primary != nullptr ? primary : PQerrorMessage(conn_.get()))},
                {"sql", sql}});
  }
  return ec;
}

Transaction::Transaction(Connection& conn, const char* begin) : conn_(conn) {
  begin_error_ = conn_.exec(begin);
  open_ = !begin_error_;
}

Transaction::~Transaction() {
  if (open_ && conn_.ok()) conn_.exec("ROLLBACK");
}

error_code Transaction::commit() {
  if (!open_) return begin_error_ ? begin_error_ : make_error_code(Errc::unavailable);
  open_ = false;  // after COMMIT, success or not, the server has ended the transaction
  return conn_.exec("COMMIT");
}

}  // namespace chat::store::pg
