#include "registry/redis_connection.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <memory>

#include "log/log.hpp"

namespace asio = boost::asio;
using boost::system::error_code;

namespace chat::registry {
namespace {

class RedisCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "redis"; }
  std::string message(int value) const override {
    switch (static_cast<RedisErrc>(value)) {
      case RedisErrc::reply_error: return "redis error reply";
      case RedisErrc::unexpected_reply: return "unexpected redis reply type";
    }
    return "redis error";
  }
};

void on_reply(redisAsyncContext*, void* raw_reply, void* privdata) {
  std::unique_ptr<ReplyHandler> handler(static_cast<ReplyHandler*>(privdata));
  const auto* reply = static_cast<const redisReply*>(raw_reply);
  error_code ec;
  if (reply == nullptr) ec = asio::error::connection_aborted;  // context freed with the command unanswered
  else if (reply->type == REDIS_REPLY_ERROR) ec = RedisErrc::reply_error;
  try {
    (*handler)(ec, reply);
  } catch (const std::exception& e) {
    // An exception must not unwind through hiredis's C frames.
    log::error("redis_handler_threw", {{"error", e.what()}});
  }
}

std::string reply_text(const redisReply* reply) {
  return reply != nullptr && reply->str != nullptr ? std::string(reply->str, reply->len) : std::string();
}

}  // namespace

const boost::system::error_category& redis_category() noexcept {
  static const RedisCategory category;
  return category;
}

error_code make_error_code(RedisErrc e) noexcept { return {static_cast<int>(e), redis_category()}; }

RedisConnection::RedisConnection(RedisStrand strand, RedisEndpoint endpoint, RedisTiming timing,
                                 std::string_view purpose)
    : strand_(std::move(strand)),
      endpoint_(std::move(endpoint)),
      purpose_(purpose),
      timing_(timing),
      retry_timer_(strand_),
      connect_timer_(strand_),
      resolver_(strand_) {}

RedisConnection::~RedisConnection() { stop(); }

std::string RedisConnection::where() const { return endpoint_.host + ":" + std::to_string(endpoint_.port); }

void RedisConnection::start() {
  stopping_ = false;
  open();
}

void RedisConnection::open() {
  if (stopping_ || context_ != nullptr || resolving_) return;
  resolving_ = true;
  // One deadline for the resolution, the connect and the handshake of this
  // attempt; one that expired just as the attempt failed finds a newer one.
  const auto attempt = ++attempts_;
  connect_timer_.expires_after(timing_.connect_timeout);
  connect_timer_.async_wait([this, attempt](error_code ec) {
    if (ec || ready_ || attempt != attempts_) return;
    if (resolving_) {
      resolving_ = false;
      resolver_.cancel();  // its handler finds resolving_ false and leaves
      return connection_lost("the host name did not resolve within the connect timeout");
    }
    reconnect("no answer within the connect timeout");
  });
  resolver_.async_resolve(endpoint_.host, std::to_string(endpoint_.port),
                          [this, alive = std::weak_ptr(self_)](error_code ec, asio::ip::tcp::resolver::results_type found) {
                            if (alive.expired() || !resolving_) return;
                            resolving_ = false;
                            if (stopping_) return;
                            if (ec || found.empty())
                              return connection_lost("cannot resolve " + endpoint_.host + ": " +
                                                     (ec ? ec.message() : std::string("no address")));
                            connect_to(found.begin()->endpoint().address().to_string());
                          });
}

// `address` is numeric: hiredis's own getaddrinfo returns at once.
void RedisConnection::connect_to(const std::string& address) {
  redisAsyncContext* c = redisAsyncConnect(address.c_str(), endpoint_.port);
  if (c == nullptr) return connection_lost("cannot allocate a redis context");
  if (c->err != 0) {
    std::string reason = c->errstr;
    redisAsyncFree(c);
    return connection_lost(reason);
  }
  redisEnableKeepAlive(&c->c);  // probes a peer that vanished without closing (15 s)
  c->data = this;
  attach_to_asio(c, strand_);
  redisAsyncSetConnectCallback(c, &RedisConnection::on_connect);
  redisAsyncSetDisconnectCallback(c, &RedisConnection::on_disconnect);
  context_ = c;
}

void RedisConnection::on_connect(const redisAsyncContext* context, int status) {
  auto* self = static_cast<RedisConnection*>(context->data);
  if (status != REDIS_OK) {
    // hiredis frees the context when this returns.
    self->context_ = nullptr;
    return self->connection_lost(context->errstr != nullptr ? context->errstr : "connect failed");
  }
  self->handshake();
}

void RedisConnection::on_disconnect(const redisAsyncContext* context, int status) {
  auto* self = static_cast<RedisConnection*>(context->data);
  self->context_ = nullptr;
  std::string reason = status == REDIS_OK ? "connection closed"
                       : context->errstr != nullptr ? context->errstr
                                                    : "connection lost";
  self->connection_lost(reason);
}

void RedisConnection::handshake() {
  // Pipelined; a failed AUTH makes SELECT fail too (NOAUTH), so SELECT's reply
  // decides, and AUTH's error text is what gets logged.
  auto auth_error = std::make_shared<std::string>();
  if (!endpoint_.password.empty())
    send(auth_command(endpoint_), [auth_error](error_code ec, const redisReply* reply) {
      if (ec == RedisErrc::reply_error) *auth_error = "AUTH: " + reply_text(reply);
    });
  send({"SELECT", std::to_string(endpoint_.db)}, [this, auth_error](error_code ec, const redisReply* reply) {
    if (ec == asio::error::connection_aborted) return;  // the disconnect path reports it
    if (ec || !auth_error->empty()) {
      log_failure(auth_error->empty() ? "SELECT: " + reply_text(reply) : *auth_error);
      // A clean close once the pending replies are in; on_disconnect retries.
      if (context_ != nullptr) redisAsyncDisconnect(context_);
      return;
    }
    handshake_done();
  });
}

void RedisConnection::handshake_done() {
  ready_ = true;
  connected_flag_ = true;
  backoff_ = std::chrono::milliseconds(0);
  connect_timer_.cancel();
  if (outage_since_) {
    auto down = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - *outage_since_);
    log::info("redis_reconnected", {{"redis", where()}, {"for", purpose_}, {"down_ms", down.count()}});
  } else if (!ever_ready_) {
    log::info("redis_connected", {{"redis", where()}, {"for", purpose_}, {"db", endpoint_.db}});
  }
  ever_ready_ = true;
  outage_since_.reset();
  if (on_ready_) on_ready_();
}

void RedisConnection::connection_lost(const std::string& reason) {
  context_ = nullptr;
  ready_ = false;
  connected_flag_ = false;
  connect_timer_.cancel();
  if (stopping_) return;
  log_failure(reason);
  schedule_reconnect();
}

void RedisConnection::log_failure(const std::string& reason) {
  if (outage_since_) {
    log::debug("redis_retry_failed", {{"redis", where()}, {"for", purpose_}, {"error", reason}});
    return;
  }
  outage_since_ = std::chrono::steady_clock::now();
  log::warn("redis_unavailable", {{"redis", where()}, {"for", purpose_}, {"error", reason}, {"retrying", true}});
}

void RedisConnection::schedule_reconnect() {
  backoff_ = backoff_.count() == 0 ? timing_.reconnect_min : std::min(backoff_ * 2, timing_.reconnect_max);
  retry_timer_.expires_after(backoff_);
  retry_timer_.async_wait([this](error_code ec) {
    if (!ec) open();
  });
}

void RedisConnection::reconnect(const char* reason) {
  if (context_ == nullptr) return;
  log_failure(reason);
  auto* c = context_;
  // Pending handlers run now with connection_aborted; on_disconnect runs too
  // if the socket had connected.
  redisAsyncFree(c);
  if (context_ == c) connection_lost(reason);
}

void RedisConnection::stop() {
  stopping_ = true;
  resolving_ = false;
  resolver_.cancel();
  retry_timer_.cancel();
  connect_timer_.cancel();
  if (auto* c = context_) {
    redisAsyncFree(c);
    context_ = nullptr;
  }
  ready_ = false;
  connected_flag_ = false;
}

void RedisConnection::command(const std::vector<std::string>& argv, ReplyHandler handler) {
  if (!ready_) {
    if (handler) asio::post(strand_, [h = std::move(handler)] { h(asio::error::not_connected, nullptr); });
    return;
  }
  send(argv, std::move(handler));
}

void RedisConnection::send(const std::vector<std::string>& argv, ReplyHandler handler) {
  std::vector<const char*> args;
  std::vector<std::size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const auto& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  auto* privdata = handler ? new ReplyHandler(std::move(handler)) : nullptr;
  int rc = redisAsyncCommandArgv(context_, privdata != nullptr ? &on_reply : nullptr, privdata,
                                 static_cast<int>(args.size()), args.data(), lengths.data());
  if (rc != REDIS_OK && privdata != nullptr) {
    // The context is closing: hiredis did not take the callback.
    std::unique_ptr<ReplyHandler> owned(privdata);
    asio::post(strand_, [h = std::move(*owned)] { h(asio::error::connection_aborted, nullptr); });
  }
}

}  // namespace chat::registry
