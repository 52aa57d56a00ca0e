#include "registry/redis_registry.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <ctime>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>

#include "common/identifier.hpp"
#include "common/io_thread.hpp"
#include "log/log.hpp"

namespace asio = boost::asio;
using boost::system::error_code;

namespace chat::registry {
namespace {

// Removals made while Redis was away, kept to apply later. Past this many the
// oldest are dropped: their heartbeats expire anyway, which makes them dead.
constexpr std::size_t kMaxMissedRemovals = 100'000;

// Drops a set member only if its heartbeat is still gone when Redis runs it,
// so a connection that re-registered in the meantime stays.
constexpr const char* kDropIfDead =
    "if redis.call('EXISTS', KEYS[2]) == 0 then return redis.call('SREM', KEYS[1], ARGV[1]) end return 0";

std::string session_key(std::string_view session) { return "session:connections:" + std::string(session); }
std::string pod_key(std::string_view pod) { return "pod:connections:" + std::string(pod); }
std::string member(std::string_view pod, std::string_view conn) { return std::string(pod) + ":" + std::string(conn); }
std::string heartbeat_key(std::string_view pod, std::string_view conn) { return "heartbeat:" + member(pod, conn); }
std::string seconds(std::chrono::seconds s) { return std::to_string(s.count()); }
std::string unix_now() { return std::to_string(static_cast<long long>(std::time(nullptr))); }

bool is_valid(const ConnectionRef& c) {
  return is_valid_identifier(c.session_id) && is_valid_identifier(c.pod_id) && is_valid_identifier(c.connection_id);
}

RedisEndpoint endpoint(const config::RedisConfig& config) {
  if (!config.host || config.host->empty()) throw std::invalid_argument("RedisRegistry needs REDIS_HOST");
  return {*config.host, config.port, config.password, config.db, config.username};
}

// The contract's timing (docs/API.md#registry), with the renewal interval the configuration chose.
RedisRegistry::Timing timing_for(const config::RedisConfig& config) {
  RedisRegistry::Timing t;
  t.renew_interval = config.renew_interval;
  return t;
}

std::string_view text(const redisReply* r) { return {r->str, r->len}; }

// "{pod}:{conn}" split at the last ':' (docs/API.md#nats); members that are not
// two valid identifiers are someone else's garbage and are skipped.
std::optional<std::pair<std::string, std::string>> split_member(std::string_view m) {
  auto colon = m.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto pod = m.substr(0, colon);
  auto conn = m.substr(colon + 1);
  if (!is_valid_identifier(pod) || !is_valid_identifier(conn)) return std::nullopt;
  return std::pair{std::string(pod), std::string(conn)};
}

// For writes nobody waits for: a failure is worth a line, not an error path.
ReplyHandler log_if_failed(const char* event) {
  return [event](error_code ec, const redisReply* reply) {
    if (ec == asio::error::connection_aborted) return;  // re-sent on reconnect
    bool failed = static_cast<bool>(ec);
    if (!failed && reply->type == REDIS_REPLY_ARRAY)  // EXEC: errors of single commands
      for (std::size_t i = 0; i < reply->elements; ++i) failed |= reply->element[i]->type == REDIS_REPLY_ERROR;
    if (failed) log::warn(event, {{"error", ec ? ec.message() : "command in transaction failed"}});
  };
}

}  // namespace

// A caller's callback plus its deadline; finished exactly once, on the strand.
struct RedisRegistry::PendingCall {
  PendingCall(const RedisStrand& strand, PodsCallback cb) : timer(strand), done(std::move(cb)) {}
  void finish(error_code ec, std::vector<std::string> pods = {}) {
    if (!done) return;  // the deadline or the answer came first
    timer.cancel();
    std::exchange(done, nullptr)(ec, std::move(pods));
  }
  asio::steady_timer timer;
  PodsCallback done;
};

RedisRegistry::RedisRegistry(const config::RedisConfig& config) : RedisRegistry(config, timing_for(config)) {}

RedisRegistry::RedisRegistry(const config::RedisConfig& config, Timing timing)
    : timing_(timing),
      strand_(asio::make_strand(io_)),
      work_(asio::make_work_guard(io_)),
      connection_(strand_, endpoint(config), timing.connection, "registry"),
      renew_timer_(strand_) {
  connection_.on_ready([this] { on_ready(); });
  asio::post(strand_, [this] {
    connection_.start();
    schedule_renewal();
  });
  thread_ = start_io_thread(io_, "redis registry");
}

RedisRegistry::~RedisRegistry() {
  asio::post(strand_, [this] {
    stopped_ = true;
    renew_timer_.cancel();
    connection_.stop();  // unanswered calls finish with connection_aborted
  });
  work_.reset();
  thread_.join();
}

void RedisRegistry::add(const ConnectionRef& c) {
  if (!is_valid(c)) {
    log::warn("registry_invalid_id", {{"op", "add"}});
    return;
  }
  asio::post(strand_, [this, c] { do_add(c); });
}

void RedisRegistry::remove(const ConnectionRef& c) {
  if (!is_valid(c)) {
    log::warn("registry_invalid_id", {{"op", "remove"}});
    return;
  }
  asio::post(strand_, [this, c] { do_remove(c); });
}

void RedisRegistry::remove_pod(const std::string& pod_id, DoneCallback done) {
  PodsCallback wrapped = [done = std::move(done)](error_code ec, std::vector<std::string>) {
    if (done) done(ec);
  };
  if (!is_valid_identifier(pod_id)) {
    asio::post(strand_, [w = std::move(wrapped)] { w(asio::error::invalid_argument, {}); });
    return;
  }
  asio::post(strand_, [this, pod_id, w = std::move(wrapped)]() mutable { do_remove_pod(pod_id, std::move(w)); });
}

void RedisRegistry::live_pods(const std::string& session_id, PodsCallback done) {
  if (!is_valid_identifier(session_id)) {
    asio::post(strand_, [done = std::move(done)] { done(asio::error::invalid_argument, {}); });
    return;
  }
  asio::post(strand_, [this, session_id, done = std::move(done)]() mutable { do_live_pods(session_id, std::move(done)); });
}

void RedisRegistry::do_add(const ConnectionRef& c) {
  live_[{pods_.intern(c.pod_id), c.connection_id}] = c.session_id;
  std::erase_if(missed_removals_, [&](const ConnectionRef& r) {
    return r.pod_id == c.pod_id && r.connection_id == c.connection_id;
  });
  if (connection_.ready()) send_add(c);
}

void RedisRegistry::do_remove(const ConnectionRef& c) {
  if (auto pod = pods_.find(c.pod_id)) live_.erase({*pod, c.connection_id});
  if (connection_.ready()) send_remove(c);
  else remember_missed_removal(c);
}

void RedisRegistry::remember_missed_removal(const ConnectionRef& c) {
  if (missed_removals_.size() >= kMaxMissedRemovals) missed_removals_.pop_front();
  missed_removals_.push_back(c);
}

void RedisRegistry::send_add(const ConnectionRef& c) {
  auto skey = session_key(c.session_id);
  auto pkey = pod_key(c.pod_id);
  connection_.command({"MULTI"});
  connection_.command({"SADD", skey, member(c.pod_id, c.connection_id)});
  connection_.command({"EXPIRE", skey, seconds(timing_.membership_ttl)});
  connection_.command({"HSET", pkey, c.connection_id, c.session_id});
  connection_.command({"EXPIRE", pkey, seconds(timing_.membership_ttl)});
  connection_.command({"SET", heartbeat_key(c.pod_id, c.connection_id), unix_now(), "EX", seconds(timing_.heartbeat_ttl)});
  connection_.command({"EXEC"}, log_if_failed("registry_add_failed"));
}

void RedisRegistry::send_remove(const ConnectionRef& c) {
  connection_.command({"MULTI"});
  connection_.command({"SREM", session_key(c.session_id), member(c.pod_id, c.connection_id)});
  connection_.command({"HDEL", pod_key(c.pod_id), c.connection_id});
  connection_.command({"DEL", heartbeat_key(c.pod_id, c.connection_id)});
  // Lost with the connection, a removal is not in live_ for on_ready to put
  // right: it is sent again then, unless the connection came back meanwhile.
  connection_.command({"EXEC"}, [this, c, logged = log_if_failed("registry_remove_failed")](error_code ec,
                                                                                          const redisReply* reply) {
    if (ec != asio::error::connection_aborted) return logged(ec, reply);
    const auto pod = pods_.find(c.pod_id);
    if (!stopped_ && !(pod && live_.contains({*pod, c.connection_id}))) remember_missed_removal(c);
  });
}

std::shared_ptr<RedisRegistry::PendingCall> RedisRegistry::start_call(PodsCallback done) {
  auto call = std::make_shared<PendingCall>(strand_, std::move(done));
  call->timer.expires_after(timing_.query_timeout);
  call->timer.async_wait([call](error_code ec) {
    if (!ec) call->finish(asio::error::timed_out);
  });
  return call;
}

void RedisRegistry::do_live_pods(const std::string& session_id, PodsCallback done) {
  auto call = start_call(std::move(done));
  connection_.command({"SMEMBERS", session_key(session_id)}, [this, session_id, call](error_code ec, const redisReply* reply) {
    if (ec) return call->finish(ec);
    if (reply->type != REDIS_REPLY_ARRAY) return call->finish(RedisErrc::unexpected_reply);
    std::vector<ConnKey> members;
    for (std::size_t i = 0; i < reply->elements; ++i)
      if (reply->element[i]->type == REDIS_REPLY_STRING)
        if (auto m = split_member(text(reply->element[i]))) members.push_back(std::move(*m));
    if (members.empty()) return call->finish({});
    check_heartbeats(session_id, std::move(members), call);
  });
}

void RedisRegistry::check_heartbeats(const std::string& session_id, std::vector<ConnKey> members,
                                     std::shared_ptr<PendingCall> call) {
  std::vector<std::string> argv{"MGET"};
  for (const auto& [pod, conn] : members) argv.push_back(heartbeat_key(pod, conn));
  connection_.command(argv, [this, session_id, members = std::move(members), call](error_code ec, const redisReply* reply) {
    if (ec) return call->finish(ec);
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != members.size())
      return call->finish(RedisErrc::unexpected_reply);
    std::set<std::string> pods;
    std::vector<ConnKey> dead;
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (reply->element[i]->type == REDIS_REPLY_NIL) dead.push_back(members[i]);
      else pods.insert(members[i].first);
    }
    drop_dead_members(session_id, dead);
    call->finish({}, {pods.begin(), pods.end()});
  });
}

void RedisRegistry::drop_dead_members(const std::string& session_id, const std::vector<ConnKey>& dead) {
  for (const auto& [pod, conn] : dead)
    connection_.command({"EVAL", kDropIfDead, "2", session_key(session_id), heartbeat_key(pod, conn), member(pod, conn)},
                        log_if_failed("registry_cleanup_failed"));
}

void RedisRegistry::do_remove_pod(const std::string& pod_id, PodsCallback done) {
  // Local entries go first: this process stops renewing them whatever Redis says.
  std::vector<ConnectionRef> local;
  const auto pod = pods_.find(pod_id);
  for (auto it = live_.begin(); pod && it != live_.end();) {
    if (it->first.first != *pod) {
      ++it;
      continue;
    }
    local.push_back({it->second, pod_id, it->first.second});
    it = live_.erase(it);
  }
  auto call = start_call(std::move(done));
  if (!connection_.ready()) {
    for (const auto& c : local) remember_missed_removal(c);
    return call->finish(asio::error::not_connected);
  }
  connection_.command({"HGETALL", pod_key(pod_id)},
                      [this, pod_id, local = std::move(local), call](error_code ec, const redisReply* reply) mutable {
                        if (ec) return call->finish(ec);
                        delete_pod_entries(pod_id, reply, std::move(local), call);
                      });
}

void RedisRegistry::delete_pod_entries(const std::string& pod_id, const redisReply* hash,
                                       std::vector<ConnectionRef> local, std::shared_ptr<PendingCall> call) {
  if (hash->type != REDIS_REPLY_ARRAY) return call->finish(RedisErrc::unexpected_reply);
  // The hash names the pod's connections in Redis (also ones of an earlier
  // run of this pod); the local list covers any the hash lost.
  for (std::size_t i = 0; i + 1 < hash->elements; i += 2) {
    auto conn = text(hash->element[i]);
    auto session = text(hash->element[i + 1]);
    if (is_valid_identifier(conn) && is_valid_identifier(session))
      local.push_back({std::string(session), pod_id, std::string(conn)});
  }
  connection_.command({"MULTI"});
  for (const auto& c : local) {
    connection_.command({"SREM", session_key(c.session_id), member(pod_id, c.connection_id)});
    connection_.command({"DEL", heartbeat_key(pod_id, c.connection_id)});
  }
  connection_.command({"DEL", pod_key(pod_id)});
  connection_.command({"EXEC"}, [call](error_code ec, const redisReply*) { call->finish(ec); });
}

void RedisRegistry::on_ready() {
  for (const auto& c : missed_removals_) send_remove(c);
  missed_removals_.clear();
  for (const auto& [key, session] : live_) send_add({session, pods_.name(key.first), key.second});
  if (!live_.empty()) log::info("registry_restored", {{"connections", live_.size()}});
  renewals_unanswered_.clear();
  ++renewal_epoch_;
}

void RedisRegistry::schedule_renewal() {
  renew_timer_.expires_after(timing_.renew_interval / kRenewSlices);
  renew_timer_.async_wait([this](error_code ec) {
    // A wait that had already fired when the destructor cancelled it still runs.
    if (ec || stopped_) return;
    renew();
    schedule_renewal();
  });
}

// Re-asserts membership as well as extending the TTLs: a worker may have
// dropped a member whose heartbeat looked expired while this pod was slow.
// Each call renews the next slice of the connections (see kRenewSlices). With
// none (a worker) it still pings: a stuck server (paused, a frozen host) keeps
// the TCP connection up and is found only by the answer that does not come.
void RedisRegistry::renew() {
  if (!connection_.ready()) return;
  const auto now = std::chrono::steady_clock::now();
  // A whole interval without an answer: the server is gone or stuck.
  if (!renewals_unanswered_.empty() && now - renewals_unanswered_.front() >= timing_.renew_interval)
    return connection_.reconnect("no answer to the heartbeat renewal");
  const auto per_slice = (live_.size() + kRenewSlices - 1) / kRenewSlices;
  auto it = renew_cursor_ ? live_.upper_bound(*renew_cursor_) : live_.begin();
  std::set<std::string> sessions, pods;
  const auto stamp = unix_now();
  for (std::size_t n = 0; n < per_slice && it != live_.end(); ++n, ++it) {
    const auto& pod = pods_.name(it->first.first);
    const auto& conn = it->first.second;
    const auto& session = it->second;
    connection_.command({"SADD", session_key(session), member(pod, conn)});
    connection_.command({"HSET", pod_key(pod), conn, session});
    connection_.command({"SET", heartbeat_key(pod, conn), stamp, "EX", seconds(timing_.heartbeat_ttl)});
    sessions.insert(session);
    pods.insert(pod);
    renew_cursor_ = it->first;
  }
  if (it == live_.end()) renew_cursor_.reset();  // the next call starts the next round
  for (const auto& s : sessions) connection_.command({"EXPIRE", session_key(s), seconds(timing_.membership_ttl)});
  for (const auto& p : pods) connection_.command({"EXPIRE", pod_key(p), seconds(timing_.membership_ttl)});
  // Replies come in order: the PING's means the whole slice was applied.
  renewals_unanswered_.push_back(now);
  connection_.command({"PING"}, [this, epoch = renewal_epoch_](error_code, const redisReply*) {
    if (epoch == renewal_epoch_ && !renewals_unanswered_.empty()) renewals_unanswered_.pop_front();
  });
}

}  // namespace chat::registry
