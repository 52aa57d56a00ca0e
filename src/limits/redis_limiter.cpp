#include "limits/redis_limiter.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>

#include "common/io_thread.hpp"
#include "log/log.hpp"

namespace asio = boost::asio;

namespace chat::limits {
namespace {

// GCRA on Redis's clock, in microseconds. Numbers are formatted with %.0f:
// Lua would write a 16-digit number in exponent form.
constexpr const char* kTakeScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = emission * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + emission
if nxt - tolerance > now then return {0, math.ceil((nxt - tolerance - now) / 1000)} end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, 0}
)lua";

// The take script's arrival time moved one interval back; a bucket back at
// full is the same as no key.
constexpr const char* kGiveBackScript = R"lua(
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local back = tat - tonumber(ARGV[1])
if back <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', back), 'PX', math.ceil((back - now) / 1000) + 1)
end
return 1
)lua";

// A bounded set of holders, each leaving by itself at its score (ms).
constexpr const char* kHoldScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local max = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= max then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(first[2]) - now)}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, 0}
)lua";

std::string redis_key(const std::string& key) { return "ratelimit:" + key; }

// A decision finishes once: with Redis's answer or at the timeout.
struct PendingDecision {
  PendingDecision(const registry::RedisStrand& strand, VerdictCallback cb) : timer(strand), done(std::move(cb)) {}
  asio::steady_timer timer;
  VerdictCallback done;
};

}  // namespace

RedisLimiter::RedisLimiter(registry::RedisEndpoint endpoint, Timing timing)
    : timing_(timing),
      strand_(asio::make_strand(io_)),
      work_(asio::make_work_guard(io_)),
      connection_(strand_, std::move(endpoint), timing.connection, "rate_limits") {
  connection_.on_ready([this] { resend_releases(); });
  asio::post(strand_, [this] { connection_.start(); });
  thread_ = start_io_thread(io_, "redis limiter");
}

RedisLimiter::~RedisLimiter() { stop(); }

// Decisions still waiting are dropped, not answered: the objects their callers
// captured (the API, the pod) are about to go.
void RedisLimiter::stop() {
  if (!thread_.joinable()) return;
  asio::post(strand_, [this] {
    stopping_ = true;
    connection_.stop();
  });
  work_.reset();
  thread_.join();
}

void RedisLimiter::take(const std::string& key, Rate rate, VerdictCallback done) {
  if (rate.off()) return done({});
  decide({"EVAL", kTakeScript, "1", redis_key(key), std::to_string(rate.interval().count()),
          std::to_string(std::max<std::uint32_t>(rate.burst, 1))},
         std::move(done));
}

// Best effort, like release(): a token Redis never gets back comes back by
// itself within one interval.
void RedisLimiter::give_back(const std::string& key, Rate rate) {
  if (rate.off()) return;
  asio::post(strand_, [this, argv = std::vector<std::string>{"EVAL", kGiveBackScript, "1", redis_key(key),
                                                               std::to_string(rate.interval().count())}] {
    connection_.command(argv);
  });
}

void RedisLimiter::hold(const std::string& key, const std::string& member, std::uint32_t max,
                        std::chrono::milliseconds ttl, VerdictCallback done) {
  if (max == 0) return done({});
  decide({"EVAL", kHoldScript, "1", redis_key(key), member, std::to_string(max), std::to_string(ttl.count())},
         std::move(done));
}

void RedisLimiter::release(const std::string& key, const std::string& member) {
  asio::post(strand_, [this, key = redis_key(key), member] { send_release(key, member); });
}

void RedisLimiter::send_release(std::string key, std::string member) {
  if (!connection_.ready()) return keep_unsent(std::move(key), std::move(member));
  connection_.command({"ZREM", key, member}, [this, key, member](boost::system::error_code ec, const redisReply*) {
    // Lost with the connection: again once it is back (ZREM twice is harmless).
    if (ec && ec != registry::RedisErrc::reply_error && !stopping_) keep_unsent(key, member);
  });
}

void RedisLimiter::keep_unsent(std::string key, std::string member) {
  constexpr std::size_t kMaxUnsent = 10'000;
  if (unsent_releases_.size() >= kMaxUnsent) unsent_releases_.pop_front();
  unsent_releases_.emplace_back(std::move(key), std::move(member));
}

void RedisLimiter::resend_releases() {
  auto unsent = std::exchange(unsent_releases_, {});
  for (auto& [key, member] : unsent) send_release(std::move(key), std::move(member));
}

void RedisLimiter::decide(std::vector<std::string> argv, VerdictCallback done) {
  asio::post(strand_, [this, argv = std::move(argv), done = std::move(done)]() mutable {
    auto pending = std::make_shared<PendingDecision>(strand_, std::move(done));
    pending->timer.expires_after(timing_.answer_timeout);
    pending->timer.async_wait([this, pending](boost::system::error_code ec) {
      if (ec || !pending->done || stopping_) return;
      undecided("no answer in time", pending->done);
      reconnect_if_silent();
    });
    // Only a command that goes out waits for Redis; without a connection it is answered at once.
    const bool sent = connection_.ready();
    if (sent && unanswered_++ == 0) silent_since_ = std::chrono::steady_clock::now();
    connection_.command(argv, [this, pending, sent, epoch = epoch_](boost::system::error_code ec, const redisReply* r) {
      if (sent && epoch == epoch_) answered();
      if (!pending->done) return;  // timed out already
      if (stopping_) {
        pending->timer.cancel();
        pending->done = {};
        return;
      }
      pending->timer.cancel();
      if (ec || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
          r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER)
        return undecided(ec ? "redis error" : "unexpected reply", pending->done);
      if (warned_) log::info("rate_limits_decided_again", {});
      warned_ = false;
      Verdict v{r->element[0]->integer == 1, std::chrono::milliseconds(r->element[1]->integer)};
      std::exchange(pending->done, {})(v);
    });
  });
}

// A sent command's handler runs once (an answer, an error, a lost connection).
void RedisLimiter::answered() {
  if (unanswered_ == 0) return;
  --unanswered_;
  silent_since_ = std::chrono::steady_clock::now();
}

void RedisLimiter::reconnect_if_silent() {
  if (unanswered_ == 0 || std::chrono::steady_clock::now() - silent_since_ < timing_.silence_limit) return;
  // The handlers of those still waiting run with connection_aborted, now or
  // later: none of them counts against the next connection.
  unanswered_ = 0;
  ++epoch_;
  connection_.reconnect("no answer to rate-limit decisions");
}

void RedisLimiter::undecided(const char* why, VerdictCallback& done) {
  failures_.fetch_add(1, std::memory_order_relaxed);
  if (!warned_) log::warn("rate_limits_undecided", {{"reason", why}, {"detail", "requests pass unlimited meanwhile"}});
  warned_ = true;
  std::exchange(done, {})(Verdict{true, {}, true});
}

}  // namespace chat::limits
