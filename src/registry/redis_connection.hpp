#pragma once
// One hiredis async connection that keeps itself up: connects in the
// background, authenticates and selects the database (REDIS_USERNAME,
// REDIS_PASSWORD, REDIS_DB), and after any failure reconnects with exponential backoff,
// forever. An outage is logged once when it starts and once when it ends, not
// per attempt.
//
// Everything, including the constructor's caller, the destructor, every
// command and every reply handler, runs on one strand; only connected() may
// be read from any thread.

#include <hiredis/async.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "registry/redis_asio.hpp"

namespace chat::registry {

enum class RedisErrc {
  reply_error = 1,   // Redis answered with an error reply
  unexpected_reply,  // a reply of the wrong type for the command
};
const boost::system::error_category& redis_category() noexcept;
boost::system::error_code make_error_code(RedisErrc e) noexcept;

struct RedisEndpoint {
  std::string host;
  int port = 6379;
  std::string password;  // empty: no AUTH
  unsigned db = 0;
  std::string username;  // empty: AUTH with the password alone (the default user)
};

// AUTH [username] password; only for an endpoint with a password.
std::vector<std::string> auth_command(const RedisEndpoint& endpoint);

// The start-up check of REDIS_USERNAME/REDIS_PASSWORD/REDIS_DB: one blocking
// connection (at most 2 s) that logs in and selects the database. Throws
// config::ConfigError naming the setting when Redis answers and refuses;
// returns quietly when Redis does not answer (the registry keeps retrying).
void check_redis_login(const RedisEndpoint& endpoint);

struct RedisTiming {
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5'000};
  // From connect() to a completed AUTH/SELECT; also bounds a silent host.
  std::chrono::milliseconds connect_timeout{3'000};
};

// `reply` lives only during the call. `ec` is set for a lost connection
// (connection_aborted), for not_connected, and for an error reply
// (RedisErrc::reply_error, with the reply still passed for its text).
using ReplyHandler = std::function<void(boost::system::error_code ec, const redisReply* reply)>;

class RedisConnection {
 public:
  // `purpose` names what the connection serves in its log lines ("registry",
  // "rate_limits"): a pod has one of each.
  RedisConnection(RedisStrand strand, RedisEndpoint endpoint, RedisTiming timing, std::string_view purpose);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Runs on the strand after every successful handshake (first and reconnects).
  void on_ready(std::function<void()> callback) { on_ready_ = std::move(callback); }

  void start();
  // Frees the context (pending handlers get connection_aborted) and stops
  // reconnecting. Not from inside a reply handler.
  void stop();
  // Drops a connection that stopped answering and reconnects. Not from inside
  // a reply handler.
  void reconnect(const char* reason);

  bool ready() const { return ready_; }
  bool connected() const { return connected_flag_.load(); }

  // Queues one command (binary-safe arguments). Without a ready connection
  // the handler gets not_connected, posted, never called inline. An empty
  // handler means nobody waits for the reply.
  void command(const std::vector<std::string>& argv, ReplyHandler handler = {});

 private:
  static void on_connect(const redisAsyncContext* context, int status);
  static void on_disconnect(const redisAsyncContext* context, int status);

  void open();
  void connect_to(const std::string& address);
  void handshake();
  void handshake_done();
  void send(const std::vector<std::string>& argv, ReplyHandler handler);
  void connection_lost(const std::string& reason);
  void schedule_reconnect();
  void log_failure(const std::string& reason);
  std::string where() const;

  RedisStrand strand_;
  RedisEndpoint endpoint_;
  std::string_view purpose_;  // a literal
  RedisTiming timing_;
  boost::asio::steady_timer retry_timer_;
  boost::asio::steady_timer connect_timer_;
  // The host name is resolved here, not by hiredis: its getaddrinfo would
  // block the strand's thread for as long as DNS takes to answer.
  boost::asio::ip::tcp::resolver resolver_;
  // A resolution's handler may come after the connection is gone (asio runs it
  // with operation_aborted): it holds this weakly and finds it expired.
  std::shared_ptr<RedisConnection*> self_ = std::make_shared<RedisConnection*>(this);
  std::function<void()> on_ready_;

  redisAsyncContext* context_ = nullptr;  // owned by hiredis once connected; null while down
  bool ready_ = false;     // handshake done on context_
  bool resolving_ = false;  // a resolution is under way; context_ is null meanwhile
  std::uint64_t attempts_ = 0;  // connection attempts begun (open())
  bool stopping_ = false;
  bool ever_ready_ = false;
  std::chrono::milliseconds backoff_{0};
  std::optional<std::chrono::steady_clock::time_point> outage_since_;  // set while an outage is logged
  std::atomic<bool> connected_flag_{false};  // mirror of ready_ for other threads
};

}  // namespace chat::registry

template <>
struct boost::system::is_error_code_enum<chat::registry::RedisErrc> : std::true_type {};
