#pragma once
// SessionRegistry on Redis with the keys of docs/API.md#registry, so that workers in
// any language can read it:
//   session:connections:{session}   SET  "{pod}:{conn}"   TTL 300 s, renewed
//   pod:connections:{pod}           HASH {conn} -> {session}, TTL 300 s, renewed
//   heartbeat:{pod}:{conn}          STRING unix time, EX 30, renewed every 10 s
//
// Threads: the registry owns one io_context and one thread. Every hiredis call,
// every timer and all of the state below run on one strand of it; public
// methods only validate their arguments and post there, so no caller ever
// waits for Redis. Callbacks (live_pods, remove_pod) run on that thread.
//
// Redis unreachable: connected() is false, an outage is logged once, the
// connection is retried with backoff forever. add/remove keep working on the
// process's own list of live connections; when Redis is back, removals made
// meanwhile are applied and every connection still live here is registered
// again (also after a Redis restart that lost everything). live_pods fails
// with boost::asio::error::not_connected while down, so the caller can fall
// back to the broadcast subject.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "config/config.hpp"
#include "registry/pod_ids.hpp"
#include "registry/redis_connection.hpp"
#include "registry/session_registry.hpp"

namespace chat::registry {

class RedisRegistry final : public SessionRegistry {
 public:
  // The contract's values (docs/API.md#registry) by default; tests shorten them.
  struct Timing {
    std::chrono::seconds heartbeat_ttl{30};
    std::chrono::seconds membership_ttl{300};  // the session set and the pod hash
    std::chrono::milliseconds renew_interval{10'000};
    std::chrono::milliseconds query_timeout{2'000};  // live_pods and remove_pod
    RedisTiming connection;
  };

  // Uses config.host (required), port, password (AUTH), db (SELECT) and
  // renew_interval. Returns at once: the connection is made in the background.
  explicit RedisRegistry(const config::RedisConfig& config);
  RedisRegistry(const config::RedisConfig& config, Timing timing);
  ~RedisRegistry() override;
  RedisRegistry(const RedisRegistry&) = delete;
  RedisRegistry& operator=(const RedisRegistry&) = delete;

  void add(const ConnectionRef& c) override;
  void remove(const ConnectionRef& c) override;
  void remove_pod(const std::string& pod_id, DoneCallback done) override;
  void live_pods(const std::string& session_id, PodsCallback done) override;
  ComponentStatus status() const override { return {"redis", false, connection_.connected()}; }

 private:
  using ConnKey = std::pair<std::string, std::string>;  // {pod id, connection id}
  using LiveKey = std::pair<std::uint32_t, std::string>;  // {pod id's index in pods_, connection id}
  struct PendingCall;

  void do_add(const ConnectionRef& c);
  void do_remove(const ConnectionRef& c);
  void do_remove_pod(const std::string& pod_id, PodsCallback done);
  void do_live_pods(const std::string& session_id, PodsCallback done);
  std::shared_ptr<PendingCall> start_call(PodsCallback done);
  void check_heartbeats(const std::string& session_id, std::vector<ConnKey> members,
                        std::shared_ptr<PendingCall> call);
  void drop_dead_members(const std::string& session_id, const std::vector<ConnKey>& dead);
  void delete_pod_entries(const std::string& pod_id, const redisReply* hash, std::vector<ConnectionRef> local,
                          std::shared_ptr<PendingCall> call);
  void remember_missed_removal(const ConnectionRef& c);
  void send_add(const ConnectionRef& c);
  void send_remove(const ConnectionRef& c);
  void on_ready();
  void schedule_renewal();
  void renew();

  Timing timing_;
  boost::asio::io_context io_;
  RedisStrand strand_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;

  // Strand only, from here on.
  RedisConnection connection_;
  boost::asio::steady_timer renew_timer_;
  // Renewals go out a slice of the connections at a time, kRenewSlices slices
  // an interval: tens of thousands of connections in one burst of commands
  // would take a core away from the streams for a good part of a second.
  static constexpr std::size_t kRenewSlices = 16;
  std::optional<LiveKey> renew_cursor_;  // the last connection renewed this round
  // When each renewal PING not yet answered went out, oldest first (replies
  // come in order). Slices go out on schedule whatever the round trip: waiting
  // for each answer would stretch a round past the heartbeat TTL on a Redis a
  // second or more away.
  std::deque<std::chrono::steady_clock::time_point> renewals_unanswered_;
  std::uint64_t renewal_epoch_ = 0;  // counts connections: a lost one's answers are not this one's
  PodIds pods_;
  std::map<LiveKey, std::string> live_;    // this process's connections -> session id
  std::deque<ConnectionRef> missed_removals_;  // removed while Redis was away
  bool stopped_ = false;  // the destructor has begun: nothing may be scheduled again

  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace chat::registry
