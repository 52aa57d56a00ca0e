#include "bus/jetstream.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/parse.hpp>

#include <utility>

#include "common/io_thread.hpp"
#include "log/log.hpp"

namespace asio = boost::asio;
using boost::system::error_code;

namespace chat::bus {
namespace {

constexpr std::chrono::seconds kSetUpRetry{2};
// How often a ready JetStream looks whether its streams and consumer still exist.
constexpr std::chrono::seconds kWatchEvery{5};
// How often calls waiting for the server look whether it is back.
constexpr std::chrono::milliseconds kLookForServerEvery{100};
// The window within which a repeated Nats-Msg-Id is stored once.
constexpr std::int64_t kDuplicateWindowNs = 2 * 60 * 1'000'000'000ll;

std::int64_t nanos(std::chrono::milliseconds d) { return static_cast<std::int64_t>(d.count()) * 1'000'000; }

// A JetStream error: the server's code when it gave one, else nats.c's status.
error_code js_error(natsStatus s, jsErrCode code) {
  if (s == NATS_OK) return {};
  auto ec = to_error_code(s);
  if (code != 0) log::debug("jetstream_error", {{"code", static_cast<std::int64_t>(code)}, {"status", ec.message()}});
  return ec;
}

// The server's answer to a publish: {"stream":..,"seq":..} or {"error":{..}}.
error_code pub_ack_error(const std::string& reply) {
  boost::system::error_code parse_ec;
  auto v = boost::json::parse(reply, parse_ec);
  if (parse_ec || !v.is_object()) return asio::error::invalid_argument;
  if (v.get_object().contains("error")) {
    log::warn("jetstream_publish_refused", {{"reply", reply}});
    return asio::error::no_permission;
  }
  return {};
}

// One publish of `msg_id` and its acknowledgement; `tries` > 1 publishes
// again, as often, when the acknowledgement did not come: after a timeout, or
// once the connection it was lost with is back (within one more timeout). The
// server may have stored the first copy; the same Nats-Msg-Id makes the next
// one a duplicate it acknowledges without storing. Holds only the bus, which
// outlives this JetStream: a timeout may fire while the program takes its
// parts down.
void publish_acked(NatsBus& bus, std::string subject, std::string payload, std::string msg_id, Headers headers,
                   std::chrono::milliseconds timeout, int tries, PublishCallback done) {
  bus.request(subject, payload, headers, timeout,
              [&bus, subject, payload, msg_id, headers, timeout, tries, done = std::move(done)](
                  error_code ec, std::string reply) mutable {
                const bool unanswered = ec == asio::error::timed_out || ec == asio::error::connection_aborted;
                if (!unanswered || tries <= 1) {
                  if (done) done(ec ? ec : pub_ack_error(reply));
                  return;
                }
                log::warn("request_publish_retried", {{"subject", subject}, {"msg_id", msg_id}, {"after", ec.message()}});
                bus.when_connected(timeout, [&bus, subject = std::move(subject), payload = std::move(payload),
                                             msg_id = std::move(msg_id), headers = std::move(headers), timeout, tries,
                                             done = std::move(done)](bool connected) mutable {
                  if (!connected) {
                    if (done) done(asio::error::not_connected);
                    return;
                  }
                  publish_acked(bus, std::move(subject), std::move(payload), std::move(msg_id), std::move(headers),
                                timeout, tries - 1, std::move(done));
                });
              });
}

}  // namespace

JetStream::JetStream(NatsBus& bus, JetStreamOptions options, bool workers)
    : bus_(bus),
      options_(options),
      workers_(workers),
      blocking_work_(asio::make_work_guard(blocking_)),
      retry_timer_(blocking_),
      waiting_timer_(blocking_) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = 5'000;
  throw_if_failed(natsConnection_JetStream(&js_, bus_.native_connection(), &o), "jetstream context");
  blocking_thread_ = start_io_thread(blocking_, "jetstream");
  run_blocking([this] { set_up(); });
}

JetStream::~JetStream() {
  stopping_ = true;
  asio::post(blocking_, [this] {
    retry_timer_.cancel();
    waiting_timer_.cancel();
  });
  blocking_work_.reset();
  blocking_thread_.join();
  jsCtx_Destroy(js_);
}

void JetStream::run_blocking(std::function<void()> fn) { asio::post(blocking_, std::move(fn)); }

void JetStream::run_blocking_when_up(std::function<void(bool)> fn) {
  run_blocking([this, fn = std::move(fn)]() mutable {
    if (up()) return fn(true);
    if (waiting_calls_.size() >= kMaxCallsWaiting) return fn(false);
    waiting_calls_.push_back(std::move(fn));
    if (waiting_calls_.size() == 1) look_for_server();
  });
}

void JetStream::look_for_server() {
  waiting_timer_.expires_after(kLookForServerEvery);
  waiting_timer_.async_wait([this](error_code e) {
    if (e || stopping_) return;
    if (!up()) return look_for_server();
    for (auto& fn : std::exchange(waiting_calls_, {})) fn(true);
  });
}

void JetStream::publish(const std::string& subject, const std::string& payload, const std::string& msg_id,
                        Headers headers, PublishCallback done, Resend resend) {
  headers.emplace_back("Nats-Msg-Id", msg_id);
  publish_acked(bus_, subject, payload, msg_id, std::move(headers), options_.publish_timeout,
                resend == Resend::once_unacknowledged ? 2 : 1, std::move(done));
}

void JetStream::set_up() {
  if (stopping_) return;
  error_code ec = bus_.connected() ? ensure_streams() : asio::error::not_connected;
  if (!ec && workers_) ec = ensure_consumer();
  if (!ec) {
    ready_ = true;
    last_problem_.clear();
    log::info("jetstream_ready", {{"work_stream", kWorkStream}, {"log_stream", kLogStream},
                                  {"replicas", options_.replicas}, {"consumer", workers_}});
    return watch();
  }
  if (ec.message() != last_problem_) {
    last_problem_ = ec.message();
    log::warn("jetstream_not_ready", {{"error", last_problem_}, {"retrying", true}});
  }
  retry_timer_.expires_after(kSetUpRetry);
  retry_timer_.async_wait([this](error_code e) {
    if (!e) set_up();
  });
}

// A server that lost its JetStream storage (restarted without its volume, a
// node replaced) comes back without the streams and the consumer, and nothing
// but this process would make them again: every chat would be refused, every
// fetch would fail, until a restart.
void JetStream::watch() {
  retry_timer_.expires_after(kWatchEvery);
  retry_timer_.async_wait([this](error_code e) {
    if (e || stopping_) return;
    if (!bus_.connected() || !state_lost()) return watch();
    ready_ = false;
    log::warn("jetstream_state_lost", {{"detail", "streams or consumer gone; making them again"}});
    set_up();
  });
}

// Only "not found" counts: a slow or unreachable server is no reason to touch
// what it holds.
bool JetStream::state_lost() {
  auto gone = [](natsStatus s, jsErrCode code) {
    return s == NATS_NOT_FOUND || code == JSStreamNotFoundErr || code == JSConsumerNotFoundErr;
  };
  for (const char* stream : {kWorkStream, kLogStream}) {
    jsStreamInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&info, js_, stream, nullptr, &code);
    if (s == NATS_OK) jsStreamInfo_Destroy(info);
    if (gone(s, code)) return true;
  }
  if (!workers_) return false;
  jsConsumerInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetConsumerInfo(&info, js_, kWorkStream, kWorkConsumer, nullptr, &code);
  if (s == NATS_OK) jsConsumerInfo_Destroy(info);
  return gone(s, code);
}

error_code JetStream::ensure_streams() {
  static const char* kWorkSubjects[] = {"chat.workflow.execute.>"};
  static const char* kLogSubjects[] = {"chat.log.>"};
  for (int i = 0; i < 2; ++i) {
    bool work = i == 0;
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = work ? kWorkStream : kLogStream;
    cfg.Subjects = work ? kWorkSubjects : kLogSubjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = work ? js_WorkQueuePolicy : js_LimitsPolicy;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = options_.replicas;
    cfg.MaxAge = nanos(work ? options_.work_max_age : options_.log_max_age);
    cfg.MaxBytes = work ? -1 : options_.log_max_bytes;
    cfg.Duplicates = kDuplicateWindowNs;
    cfg.AllowDirect = !work;
    jsStreamInfo* info = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&info, js_, cfg.Name, nullptr, &code);
    if (s == NATS_OK) {
      jsStreamInfo_Destroy(info);
      s = js_UpdateStream(&info, js_, &cfg, nullptr, &code);
    } else if (s == NATS_NOT_FOUND || code == JSStreamNotFoundErr) {
      s = js_AddStream(&info, js_, &cfg, nullptr, &code);
    }
    if (s == NATS_OK) jsStreamInfo_Destroy(info);
    if (auto ec = js_error(s, code)) return ec;
  }
  return {};
}

error_code JetStream::ensure_consumer() {
  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.Durable = kWorkConsumer;
  cfg.AckPolicy = js_AckExplicit;
  cfg.AckWait = nanos(options_.ack_wait);
  cfg.MaxDeliver = options_.max_deliver;
  cfg.MaxAckPending = options_.max_ack_pending;
  jsConsumerInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetConsumerInfo(&info, js_, kWorkStream, kWorkConsumer, nullptr, &code);
  if (s == NATS_OK) {
    jsConsumerInfo_Destroy(info);
    s = js_UpdateConsumer(&info, js_, kWorkStream, &cfg, nullptr, &code);
  } else if (s == NATS_NOT_FOUND || code == JSConsumerNotFoundErr) {
    s = js_AddConsumer(&info, js_, kWorkStream, &cfg, nullptr, &code);
  }
  if (s == NATS_OK) jsConsumerInfo_Destroy(info);
  return js_error(s, code);
}

}  // namespace chat::bus
