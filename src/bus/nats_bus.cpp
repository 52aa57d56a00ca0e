// Longer than most files: the whole nats.c binding of the MessageBus. The
// connection's options and login, the subscriptions' lifetime against nats.c's
// delivery thread, and request-reply all share the connection's state.

#include "bus/nats_bus.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <charconv>
#include <climits>
#include <functional>
#include <future>
#include <mutex>

#include "common/identifier.hpp"
#include "common/io_thread.hpp"
#include "log/log.hpp"

namespace asio = boost::asio;
using boost::system::error_code;

namespace chat::bus {

// The closure of every nats.c connection callback. nats.c runs them on its
// event thread, possibly after NatsBus has started to go away, so this object
// stays alive until the closed callback (the last one nats.c runs for a
// connection) has returned.
struct NatsBus::ConnectionEvents {
  std::string name;
  std::atomic<bool> connected{false};
  std::atomic<bool> closing{false};  // our own close: expected, not worth a warning
  std::atomic<std::uint64_t> reconnects{0};
  std::atomic<std::uint64_t> slow_consumer{0};  // reports of a subscription dropping messages
  // Set before connecting; runs on nats.c's event thread when the server is lost.
  std::function<void()> lost;
  std::promise<void> closed;
};

namespace {

using Events = NatsBus::ConnectionEvents;

constexpr std::chrono::seconds kCloseWait{5};
// How long an unsubscribed subscription is kept before it is freed (retire()).
constexpr std::chrono::seconds kRetireDelay{2};
// A drain past this gives up on what is still queued (a handler that stopped
// returning); nats.c then closes the subscription.
constexpr std::chrono::seconds kDrainTimeout{5};
// Server liveness when the TCP connection does not break (a partitioned
// network): a missed PONG every 10 s, three in a row count as disconnected.
constexpr std::int64_t kPingIntervalMs = 10'000;
constexpr int kMaxPingsOut = 3;
// nats.c treats 0 as "use the 8 MB default"; one byte is the smallest buffer
// it accepts, so a publish that races a disconnect fails instead of queueing.
constexpr int kReconnectBufferBytes = 1;

void on_connected(natsConnection*, void* closure) {
  auto* events = static_cast<Events*>(closure);
  events->connected = true;
  log::info("nats_connected", {{"bus", events->name}});
}

void on_disconnected(natsConnection*, void* closure) {
  auto* events = static_cast<Events*>(closure);
  events->connected = false;
  if (events->closing) return;
  log::warn("nats_disconnected", {{"bus", events->name}, {"retrying", true}});
  events->lost();
}

void on_reconnected(natsConnection*, void* closure) {
  auto* events = static_cast<Events*>(closure);
  events->connected = true;
  events->reconnects.fetch_add(1);
  log::info("nats_reconnected", {{"bus", events->name}});
}

void on_closed(natsConnection* connection, void* closure) {
  auto* events = static_cast<Events*>(closure);
  events->connected = false;
  if (!events->closing) {
    // The server refusing our login (twice in a row) also ends here.
    const char* text = nullptr;
    natsStatus last = natsConnection_GetLastError(connection, &text);
    log::error("nats_closed", {{"bus", events->name},
                               {"reason", "reconnect attempts exhausted"},
                               {"last_error", text != nullptr && *text ? text : natsStatus_GetText(last)}});
  }
  events->closed.set_value();
}

void on_async_error(natsConnection*, natsSubscription* sub, natsStatus status, void* closure) {
  auto* events = static_cast<Events*>(closure);
  if (status == NATS_SLOW_CONSUMER) events->slow_consumer.fetch_add(1);
  const char* subject = sub != nullptr ? natsSubscription_GetSubject(sub) : nullptr;
  log::warn("nats_async_error", {{"bus", events->name},
                                 {"error", natsStatus_GetText(status)},
                                 {"subject", subject != nullptr ? subject : ""}});
}

// Login and TLS. A file nats.c cannot load fails here, naming its setting.
void apply_security(natsOptions* o, const config::NatsConfig& c) {
  if (!c.token.empty()) throw_if_failed(natsOptions_SetToken(o, c.token.c_str()), "NATS_TOKEN");
  if (!c.user.empty())
    throw_if_failed(natsOptions_SetUserInfo(o, c.user.c_str(), c.password.c_str()), "NATS_USER/NATS_PASSWORD");
  if (!c.creds_file.empty())
    throw_if_failed(natsOptions_SetUserCredentialsFromFiles(o, c.creds_file.c_str(), nullptr), "NATS_CREDS");
  if (!c.tls_ca_file.empty() || !c.tls_cert_file.empty()) throw_if_failed(natsOptions_SetSecure(o, true), "NATS_TLS_CA");
  if (!c.tls_ca_file.empty())
    throw_if_failed(natsOptions_LoadCATrustedCertificates(o, c.tls_ca_file.c_str()), "NATS_TLS_CA");
  if (!c.tls_cert_file.empty())
    throw_if_failed(natsOptions_LoadCertificatesChain(o, c.tls_cert_file.c_str(), c.tls_key_file.c_str()),
                    "NATS_TLS_CERT/NATS_TLS_KEY");
}

// A server that answered and refused us is a configuration error naming the
// setting to fix, never a silent retry loop. Empty for other failures.
std::string refusal(natsStatus status, const config::NatsConfig& c) {
  std::string detail = natsStatus_GetText(status);
  if (const char* last = nats_GetLastError(nullptr); last != nullptr && *last != '\0') detail = last;
  switch (status) {
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
      if (c.login_setting().empty())
        return "NATS_URL: the NATS server requires a login (" + detail +
               "); set NATS_TOKEN, NATS_USER/NATS_PASSWORD or NATS_CREDS";
      return c.login_setting() + ": the NATS server refused the login (" + detail + ")";
    case NATS_SECURE_CONNECTION_REQUIRED:
      return "NATS_TLS_CA: the NATS server requires TLS (" + detail + ")";
    case NATS_SECURE_CONNECTION_WANTED:
      return "NATS_TLS_CA: TLS is set but the NATS server does not offer it (" + detail + ")";
    case NATS_SSL_ERROR:
      return "NATS_TLS_CA/NATS_TLS_CERT: TLS with the NATS server failed (" + detail + ")";
    case NATS_PROTOCOL_ERROR:
      // With TLS 1.3 a server that wants a client certificate says so by
      // closing the connection right after the handshake.
      if (c.tls_ca_file.empty() && c.tls_cert_file.empty()) return "";
      return "NATS_TLS_CERT/NATS_TLS_KEY: the NATS server closed the connection after TLS; a server that "
             "verifies clients needs both (" + detail + ")";
    default:
      return "";
  }
}

// A subject goes into the protocol line as it is: whitespace would split it.
bool is_valid_subject(std::string_view subject) {
  return !subject.empty() && subject.find_first_of(" \t\r\n") == std::string_view::npos;
}

bool is_connected(natsConnection* nc) { return natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED; }

// Hands one message to nats.c's write buffer; never waits for the network.
error_code publish_now(natsConnection* nc, const std::string& subject, const std::string& payload,
                       const std::string& reply_to, const Headers& headers = {}) {
  if (!is_valid_subject(subject)) return asio::error::invalid_argument;
  if (payload.size() > static_cast<std::size_t>(INT_MAX)) return asio::error::message_size;
  if (!is_connected(nc)) return asio::error::not_connected;
  auto size = static_cast<int>(payload.size());
  if (headers.empty()) {
    natsStatus s = reply_to.empty()
                       ? natsConnection_Publish(nc, subject.c_str(), payload.data(), size)
                       : natsConnection_PublishRequest(nc, subject.c_str(), reply_to.c_str(), payload.data(), size);
    return to_error_code(s);
  }
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subject.c_str(), reply_to.empty() ? nullptr : reply_to.c_str(), payload.data(), size);
  NatsMsgPtr msg(raw);
  for (const auto& [key, value] : headers)
    if (s == NATS_OK) s = natsMsgHeader_Set(msg.get(), key.c_str(), value.c_str());
  if (s == NATS_OK) s = natsConnection_PublishMsg(nc, msg.get());
  return to_error_code(s);
}

// Handled messages kept before they are handed back to nats.c together: at
// most this many, or this many bytes of payload (plus the message that
// crosses it), also while the subscription is quiet.
constexpr std::size_t kMaxSpentMessages = 64;
constexpr std::size_t kMaxSpentBytes = 64 * 1024;

// What nats.c's delivery thread and the Subscription share.
struct SubscriptionState {
  explicit SubscriptionState(MessageHandler h) : handler(std::move(h)) { spent.reserve(kMaxSpentMessages); }
  MessageHandler handler;
  // Held while the handler runs, so unsubscribing can wait for a running call.
  // Recursive: a handler may drop its own subscription.
  std::recursive_mutex running;
  bool active = true;  // guarded by `running`
  // Handled messages not yet handed back, guarded by `running`. nats.c frees a
  // message on a collector thread of its own and wakes that thread for each one
  // it finds idle: handed back together, they cost it one wake-up.
  std::vector<NatsMsgPtr> spent;
  std::size_t spent_bytes = 0;  // guarded by `running`
  // Subscription::drain's callback, run by the completion. Not under
  // `running`: a drain must not wait for a handler call in progress.
  // Recursive: the callback may drop its own subscription.
  std::recursive_mutex drain_mutex;
  std::function<void()> drained;  // guarded by drain_mutex
};

// nats.c holds one of these as the subscription's closure until it reports,
// through the completion callback, that it will not call the handler again.
using StateRef = std::shared_ptr<SubscriptionState>;

// Only requests carry headers: a chunk costs one failed lookup here.
Headers read_headers(natsMsg* msg) {
  Headers headers;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) != NATS_OK) return headers;
  for (int i = 0; i < count; ++i) {
    const char* value = nullptr;
    if (natsMsgHeader_Get(msg, keys[i], &value) == NATS_OK && value != nullptr) headers.emplace_back(keys[i], value);
  }
  free(static_cast<void*>(keys));
  return headers;
}

// Whether nats.c holds further messages for `sub` (its delivery thread calls
// the handler for one at a time).
bool more_queued(natsSubscription* sub) {
  int msgs = 0;
  return natsSubscription_GetPending(sub, &msgs, nullptr) == NATS_OK && msgs > 0;
}

void on_message(natsConnection*, natsSubscription* sub, natsMsg* raw, void* closure) {
  NatsMsgPtr msg(raw);
  // A strong reference of our own: a handler that drops its own subscription
  // may let nats.c run the completion (which deletes `closure`) before this
  // frame has released the lock that lives in the state.
  StateRef keep = *static_cast<StateRef*>(closure);
  auto& state = *keep;
  std::lock_guard lock(state.running);
  if (!state.active) return;
  const char* reply = natsMsg_GetReply(msg.get());
  Message m{natsMsg_GetSubject(msg.get()),
            std::string_view(natsMsg_GetData(msg.get()), static_cast<std::size_t>(natsMsg_GetDataLength(msg.get()))),
            reply != nullptr ? std::string_view(reply) : std::string_view(), read_headers(msg.get()),
            more_queued(sub)};
  try {
    state.handler(m);
  } catch (const std::exception& e) {
    // Nothing above this frame could handle it: it would end the process.
    log::error("nats_handler_threw", {{"subject", m.subject}, {"error", e.what()}});
  }
  state.spent_bytes += m.payload.size();
  state.spent.push_back(std::move(msg));
  if (state.spent.size() >= kMaxSpentMessages || state.spent_bytes >= kMaxSpentBytes) {
    state.spent.clear();
    state.spent_bytes = 0;
  }
}

// nats.c calls the handler no more: the subscription was drained, or closed.
void on_subscription_complete(void* closure) {
  std::unique_ptr<StateRef> ref(static_cast<StateRef*>(closure));
  auto& state = **ref;
  // Under the lock the destructor takes: `drained` never runs once it returned.
  std::lock_guard lock(state.drain_mutex);
  if (auto drained = std::exchange(state.drained, nullptr)) drained();
}

}  // namespace

struct NatsBus::Retirement {
  std::mutex mutex;  // guards bus
  NatsBus* bus;      // null once the bus has closed its connection
};

namespace {

class NatsSubscription final : public Subscription {
 public:
  NatsSubscription(std::shared_ptr<NatsBus::Retirement> retirement, NatsSubscriptionPtr sub, StateRef state)
      : retirement_(std::move(retirement)), sub_(std::move(sub)), state_(std::move(state)) {}
  ~NatsSubscription() override {
    stop();
    std::lock_guard lock(retirement_->mutex);
    if (retirement_->bus) retirement_->bus->retire(std::move(sub_));
    // Else the bus has closed its connection: freeing at once is safe.
  }

  void drain(std::function<void()> drained) override {
    {
      std::lock_guard lock(state_->drain_mutex);
      state_->drained = std::move(drained);
    }
    const natsStatus s = natsSubscription_DrainTimeout(sub_.get(), std::chrono::milliseconds(kDrainTimeout).count());
    if (s == NATS_OK) return;
    // Disconnected or closed: no drain is possible, so it ends here as its
    // destructor would end it.
    log::warn("nats_drain_failed", {{"error", natsStatus_GetText(s)}});
    std::function<void()> now;
    {
      std::lock_guard lock(state_->drain_mutex);
      now = std::exchange(state_->drained, nullptr);
    }
    stop();
    if (now) now();
  }

 private:
  void stop() {
    // Stops new deliveries; fails harmlessly when the connection is closed.
    natsSubscription_Unsubscribe(sub_.get());
    {
      // Waits for a handler call in progress on the delivery thread; any call
      // nats.c still makes afterwards finds `active` false.
      std::lock_guard lock(state_->running);
      state_->active = false;
    }
    std::lock_guard lock(state_->drain_mutex);
    state_->drained = nullptr;
  }

  std::shared_ptr<NatsBus::Retirement> retirement_;
  NatsSubscriptionPtr sub_;
  StateRef state_;
};

}  // namespace

NatsBus::NatsBus(const config::NatsConfig& config, std::string name)
    : name_(std::move(name)),
      work_(asio::make_work_guard(io_)),
      events_(std::make_unique<ConnectionEvents>()),
      inbox_prefix_("_INBOX." + new_identifier("") + "."),
      retirement_(std::make_shared<Retirement>()) {
  retirement_->bus = this;
  events_->name = name_;
  // A request's reply cannot come once the server is gone (it was lost with
  // the connection, or never sent): its caller hears so now, not at its timeout.
  events_->lost = [this] { asio::post(io_, [this] { fail_pending(asio::error::connection_aborted); }); };
  connect(config);
  try {
    inbox_ = subscribe(inbox_prefix_ + "*", {}, [this](const Message& m) { on_inbox_message(m); });
  } catch (...) {
    close_connection();
    throw;
  }
  thread_ = start_io_thread(io_, "nats bus " + name_);
}

std::vector<std::string> split_server_urls(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto comma = text.find(',', start);
    auto part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    auto first = part.find_first_not_of(" \t");
    auto last = part.find_last_not_of(" \t");
    if (first != std::string::npos) out.push_back(part.substr(first, last - first + 1));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.empty()) throw std::invalid_argument("NATS_URL names no server");
  return out;
}

namespace {

// The servers for a log line: a login in a URL is never logged.
std::string without_logins(const std::vector<std::string>& urls) {
  std::string out;
  for (const auto& url : urls) {
    auto start = url.find("://");
    start = start == std::string::npos ? 0 : start + 3;
    auto at = url.rfind('@');
    if (!out.empty()) out += ',';
    out += at == std::string::npos || at < start ? url : url.substr(0, start) + url.substr(at + 1);
  }
  return out;
}

}  // namespace

void NatsBus::connect(const config::NatsConfig& config) {
  if (!config.url || config.url->empty()) throw std::invalid_argument("NatsBus needs NATS_URL");
  natsOptions* raw_options = nullptr;
  throw_if_failed(natsOptions_Create(&raw_options), "nats options");
  NatsOptionsPtr options(raw_options);
  natsOptions* o = options.get();
  void* closure = events_.get();
  // Several servers (a cluster) are a comma-separated list: nats.c's URL
  // option takes one, so the list goes in as the server pool.
  auto urls = split_server_urls(*config.url);
  if (urls.size() == 1) {
    throw_if_failed(natsOptions_SetURL(o, urls.front().c_str()), "NATS_URL");
  } else {
    std::vector<const char*> servers;
    for (const auto& u : urls) servers.push_back(u.c_str());
    throw_if_failed(natsOptions_SetServers(o, servers.data(), static_cast<int>(servers.size())), "NATS_URL");
  }
  throw_if_failed(natsOptions_SetName(o, name_.c_str()), "nats name");
  throw_if_failed(natsOptions_SetMaxReconnect(o, config.max_reconnects), "NATS_MAX_RECONNECTS");
  throw_if_failed(natsOptions_SetReconnectWait(o, config.reconnect_wait.count()), "NATS_RECONNECT_WAIT");
  throw_if_failed(natsOptions_SetReconnectBufSize(o, kReconnectBufferBytes), "nats reconnect buffer");
  throw_if_failed(natsOptions_SetPingInterval(o, kPingIntervalMs), "nats ping interval");
  throw_if_failed(natsOptions_SetMaxPingsOut(o, kMaxPingsOut), "nats max pings");
  throw_if_failed(natsOptions_DisableNoResponders(o, true), "nats no responders");
  throw_if_failed(natsOptions_SetSendAsap(o, config.send_asap), "NATS_SEND_ASAP");
  apply_security(o, config);
  throw_if_failed(natsOptions_SetDisconnectedCB(o, on_disconnected, closure), "nats callback");
  throw_if_failed(natsOptions_SetReconnectedCB(o, on_reconnected, closure), "nats callback");
  throw_if_failed(natsOptions_SetClosedCB(o, on_closed, closure), "nats callback");
  throw_if_failed(natsOptions_SetErrorHandler(o, on_async_error, closure), "nats callback");

  // One plain attempt first, so that a server refusing our login or TLS is a
  // start-up error; only when no server answers yet (a pod may start before
  // NATS) does nats.c keep trying in the background.
  natsConnection* raw_connection = nullptr;
  natsStatus s = natsConnection_Connect(&raw_connection, o);
  std::string first_failure;
  if (s == NATS_NO_SERVER || s == NATS_TIMEOUT || s == NATS_IO_ERROR) {
    const char* last = nats_GetLastError(nullptr);
    first_failure = last != nullptr && *last != '\0' ? last : natsStatus_GetText(s);
    throw_if_failed(natsOptions_SetRetryOnFailedConnect(o, true, on_connected, closure), "nats retry");
    s = natsConnection_Connect(&raw_connection, o);
  }
  if (s == NATS_OK) {
    events_->connected = true;
    log::info("nats_connected", {{"bus", name_}});
  } else if (s == NATS_NOT_YET_CONNECTED) {
    log::warn("nats_unavailable", {{"bus", name_}, {"servers", without_logins(urls)}, {"error", first_failure},
                                   {"retrying", true}});
  } else {
    if (auto why = refusal(s, config); !why.empty()) throw config::ConfigError(why);
    throw_if_failed(s, "nats connect");
  }
  connection_.reset(raw_connection);
}

NatsBus::~NatsBus() {
  closing_ = true;
  // Requests still waiting end now, on the bus thread, before the connection
  // goes: no timeout of theirs runs while it closes.
  std::promise<void> ended;
  asio::post(io_, [this, &ended] {
    fail_pending(asio::error::operation_aborted);
    ended.set_value();
  });
  ended.get_future().wait();
  inbox_.reset();
  close_connection();
  {
    std::lock_guard lock(retirement_->mutex);
    retirement_->bus = nullptr;
  }
  stop_bus_thread();
  retired_.clear();  // nats.c's threads are gone: nothing can look them up any more
}

void NatsBus::close_connection() {
  events_->closing = true;
  natsConnection_Close(connection_.get());
  if (events_->closed.get_future().wait_for(kCloseWait) != std::future_status::ready) {
    // nats.c may still run a callback with this closure: keep it, leak it.
    log::warn("nats_close_slow", {{"bus", name_}});
    (void)events_.release();
  }
  connection_.reset();
}

void NatsBus::stop_bus_thread() {
  asio::post(io_, [this] {
    retire_stopped_ = true;
    retire_timer_.cancel();
    fail_pending(asio::error::operation_aborted);
  });
  work_.reset();
  thread_.join();
}

ComponentStatus NatsBus::status() const {
  return {.backend = "nats",
          .connected = events_->connected,
          .errors = publish_failures_.load(std::memory_order_relaxed),
          .reconnects = events_->reconnects.load(),
          .slow_consumer = events_->slow_consumer.load()};
}

void NatsBus::defer(std::function<void()> fn) { asio::post(io_, std::move(fn)); }

void NatsBus::when_connected(std::chrono::milliseconds within, std::function<void(bool)> then) {
  asio::post(io_, [this, deadline = std::chrono::steady_clock::now() + within, then = std::move(then)]() mutable {
    poll_connected(deadline, std::move(then));
  });
}

// nats.c tells of a reconnect on its event thread; a look every 50 ms on the
// bus thread needs no state shared with it, and the bus stopping ends it.
void NatsBus::poll_connected(std::chrono::steady_clock::time_point deadline, std::function<void(bool)> then) {
  constexpr std::chrono::milliseconds kLookEvery{50};
  if (closing_) return then(false);
  if (is_connected(connection_.get())) return then(true);
  const auto now = std::chrono::steady_clock::now();
  if (now >= deadline) return then(false);
  auto timer = std::make_shared<asio::steady_timer>(io_, std::min(deadline, now + kLookEvery));
  timer->async_wait([this, timer, deadline, then = std::move(then)](error_code) mutable {
    poll_connected(deadline, std::move(then));
  });
}

std::shared_ptr<natsSubscription> NatsBus::share_subscription(natsSubscription* sub) {
  return {sub, [retirement = retirement_](natsSubscription* s) {
            std::lock_guard lock(retirement->mutex);
            if (retirement->bus) return retirement->bus->retire(NatsSubscriptionPtr(s));
            natsSubscription_Destroy(s);
          }};
}

void NatsBus::retire(NatsSubscriptionPtr sub) {
  if (!sub) return;
  asio::post(io_, [this, sub = std::move(sub)]() mutable {
    retired_.emplace_back(std::chrono::steady_clock::now() + kRetireDelay, std::move(sub));
    if (retired_.size() == 1 && !retire_stopped_) schedule_retirement();
  });
}

// Re-armed from its own handler, so it checks retire_stopped_ (set on the bus
// thread when the bus stops): a handler already queued when the timer is
// cancelled must not arm it again.
void NatsBus::schedule_retirement() {
  retire_timer_.expires_at(retired_.front().first);
  retire_timer_.async_wait([this](error_code ec) {
    if (ec || retire_stopped_) return;
    const auto now = std::chrono::steady_clock::now();
    while (!retired_.empty() && retired_.front().first <= now) retired_.pop_front();
    if (!retired_.empty()) schedule_retirement();
  });
}

void NatsBus::complete(PublishCallback done, error_code ec) {
  if (done) asio::post(io_, [done = std::move(done), ec] { done(ec); });
}

void NatsBus::publish(std::string subject, std::string payload, Headers headers, PublishCallback done) {
  auto ec = publish_now(connection_.get(), subject, payload, {}, headers);
  if (ec) publish_failures_.fetch_add(1, std::memory_order_relaxed);
  complete(std::move(done), ec);
}

std::unique_ptr<Subscription> NatsBus::subscribe(std::string pattern, std::string queue_group,
                                                 MessageHandler handler) {
  auto state = std::make_shared<SubscriptionState>(std::move(handler));
  auto* closure = new StateRef(state);
  natsSubscription* raw = nullptr;
  natsStatus s = queue_group.empty()
                     ? natsConnection_Subscribe(&raw, connection_.get(), pattern.c_str(), on_message, closure)
                     : natsConnection_QueueSubscribe(&raw, connection_.get(), pattern.c_str(), queue_group.c_str(),
                                                     on_message, closure);
  if (s != NATS_OK) {
    delete closure;
    throw_if_failed(s, "nats subscribe");
  }
  NatsSubscriptionPtr sub(raw);
  if (natsSubscription_SetOnCompleteCB(raw, on_subscription_complete, closure) != NATS_OK) {
    // Only when the connection closed in between: the delivery thread may be
    // in the handler right now, so the closure cannot be freed. It leaks.
    log::warn("nats_subscription_closed_early", {{"bus", name_}, {"subject", pattern}});
  }
  return std::make_unique<NatsSubscription>(retirement_, std::move(sub), std::move(state));
}

void NatsBus::request(std::string subject, std::string payload, std::chrono::milliseconds timeout,
                      ReplyCallback done) {
  request(std::move(subject), std::move(payload), {}, timeout, std::move(done));
}

void NatsBus::request(std::string subject, std::string payload, Headers headers, std::chrono::milliseconds timeout,
                      ReplyCallback done) {
  if (closing_ || !is_connected(connection_.get())) {
    asio::post(io_, [done = std::move(done)] { done(asio::error::not_connected, {}); });
    return;
  }
  auto token = ++next_token_;
  // Registering on the bus thread before publishing there orders the
  // registration before any reply, which is also handled on the bus thread.
  asio::post(io_, [this, token, subject = std::move(subject), payload = std::move(payload),
                   headers = std::move(headers), timeout, done = std::move(done)]() mutable {
    start_request(token, std::move(subject), std::move(payload), std::move(headers), timeout, std::move(done));
  });
}

void NatsBus::start_request(std::uint64_t token, std::string subject, std::string payload, Headers headers,
                            std::chrono::milliseconds timeout, ReplyCallback done) {
  // Asked as the bus began to close, and posted after the destructor ended
  // the pending requests: the connection may be going right now.
  if (closing_) return done(asio::error::operation_aborted, {});
  auto timer = std::make_unique<asio::steady_timer>(io_, timeout);
  timer->async_wait([this, token](error_code ec) {
    if (!ec) complete_request(token, asio::error::timed_out, {});
  });
  pending_.emplace(token, PendingRequest{std::move(done), std::move(timer)});
  if (auto ec = publish_now(connection_.get(), subject, payload, inbox_prefix_ + std::to_string(token), headers))
    complete_request(token, ec, {});
}

void NatsBus::complete_request(std::uint64_t token, error_code ec, std::string reply) {
  auto it = pending_.find(token);
  if (it == pending_.end()) return;  // answered twice, or the answer came after the timeout
  auto request = std::move(it->second);
  pending_.erase(it);
  request.timer->cancel();
  request.done(ec, std::move(reply));
}

void NatsBus::fail_pending(error_code ec) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [token, p] : pending) {
    p.timer->cancel();
    p.done(ec, {});
  }
}

void NatsBus::on_inbox_message(const Message& m) {
  auto text = m.subject.substr(std::min(inbox_prefix_.size(), m.subject.size()));
  std::uint64_t token = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), token);
  if (err != std::errc() || end != text.data() + text.size()) return;
  asio::post(io_, [this, token, reply = std::string(m.payload)]() mutable {
    complete_request(token, {}, std::move(reply));
  });
}

}  // namespace chat::bus
