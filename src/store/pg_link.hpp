#pragma once
// One PostgreSQL connection and the policy that keeps it alive: reconnect with
// backoff while the server is down (and at once when another link of the pool
// has reconnected), one fresh connection and one more try when a job finds the
// connection dead. Used by each pool thread and the retry thread.

#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <functional>

#include "store/pg_conn.hpp"

namespace chat::store::pg {

// Reconnect (and retry-queue) backoff: quick enough that a restart of the server
// costs a second, slow enough that an outage is not a connection storm.
inline constexpr std::chrono::milliseconds kMinBackoff{100};
inline constexpr std::chrono::milliseconds kMaxBackoff{2000};

// A job's database work. It may run twice (see Link::run), so it starts from
// scratch each time: its own transaction, its own result.
using Attempt = std::function<boost::system::error_code(Connection&)>;

// What a pool's links share about the server (atomics: each link has a thread).
struct PoolHealth {
  std::atomic<int> links_up{0};  // PostgresStore::connected()
  // When a link last connected: one that failed before then knows the server
  // is back without waiting out its backoff.
  std::atomic<std::chrono::steady_clock::rep> last_connected{0};
};

class Link {
 public:
  // `pool` is shared by the links of one pool; null for a link on its own.
  Link(const ConnectParams& params, PoolHealth* pool) : conn_(params), pool_(pool) {}
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;
  ~Link() {
    if (up_ && pool_ != nullptr) pool_->links_up.fetch_sub(1);
  }

  // One connection attempt now, whatever the backoff says.
  bool connect_now();
  // Runs `attempt`, reconnecting first when due. A connection that dies under the
  // attempt (server restart, failover, idle kill) is reopened and the attempt
  // retried once. Errc::unavailable while the server cannot be reached.
  boost::system::error_code run(const Attempt& attempt);
  // Called when the thread has nothing to do: notices a server that went away,
  // reconnects to one that came back.
  void idle();
  // Closes the connection on purpose (not counted as lost).
  void close();

  Connection& connection() { return conn_; }
  const std::string& error_message() const { return conn_.error_message(); }

 private:
  bool ensure_connected();
  bool reconnected_since_my_failure() const;
  void mark_up();
  void mark_down();

  Connection conn_;
  PoolHealth* pool_;
  bool up_ = false;
  std::chrono::steady_clock::time_point failed_at_{};
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_ = kMinBackoff;
};

}  // namespace chat::store::pg
