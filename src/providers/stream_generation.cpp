#include "providers/stream_generation.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "log/log.hpp"

namespace asio = boost::asio;
using boost::system::error_code;

namespace chat::providers {
namespace {

using http_client::HttpCall;
using http_client::HttpClientError;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kMaxErrorBody = 64 * 1024;
constexpr std::size_t kMaxDrain = 64 * 1024;
constexpr std::chrono::milliseconds kDrainWait{1'000};  // per read, after the reply ended

std::string seconds(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

bool contains_ci(std::string_view haystack, std::string_view needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         }) != haystack.end();
}

}  // namespace

std::shared_ptr<StreamGeneration> StreamGeneration::start(std::shared_ptr<http_client::HttpClient> client,
                                                          std::shared_ptr<const WireProtocol> protocol,
                                                          http_client::HttpRequest request, std::string model,
                                                          std::string secret, RetryPolicy retry,
                                                          std::shared_ptr<GenerationSink> sink) {
  auto g = std::make_shared<StreamGeneration>(std::move(client), std::move(protocol), std::move(request),
                                              std::move(model), std::move(secret), retry, std::move(sink));
  asio::co_spawn(g->strand_, g->run(), [g](std::exception_ptr e) {
    if (!e) return;
    // Nothing in run() throws by design; if something does, the reply still ends.
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    log::error("provider_internal_error", {{"provider", g->display_name()}, {"error", what}});
    asio::post(g->strand_, [g] {
      if (g->call_) g->call_->abort();
      g->fail({std::string(provider_code::kError), "internal error in the provider client", false, std::nullopt});
    });
  });
  return g;
}

StreamGeneration::StreamGeneration(std::shared_ptr<http_client::HttpClient> client,
                                   std::shared_ptr<const WireProtocol> protocol, http_client::HttpRequest request,
                                   std::string model, std::string secret, RetryPolicy retry,
                                   std::shared_ptr<GenerationSink> sink)
    : strand_(asio::make_strand(client->executor())), client_(std::move(client)), protocol_(std::move(protocol)),
      request_(std::move(request)), model_(std::move(model)), secret_(std::move(secret)), retry_(retry),
      backoff_timer_(strand_), sink_(std::move(sink)) {}

void StreamGeneration::cancel() {
  asio::post(strand_, [self = shared_from_this()] {
    if (!self->sink_) return;
    // Report at once rather than when the coroutine unwinds: the caller is
    // waiting for the final chunk, and the socket close below is enough to
    // stop the provider's work.
    if (self->call_) self->call_->abort();
    self->backoff_timer_.cancel();
    self->succeed("cancelled");
  });
}

asio::awaitable<void> StreamGeneration::run() {
  auto self = shared_from_this();  // the coroutine frame keeps the generation alive
  for (unsigned retry = 0;; ++retry) {
    if (!sink_) co_return;  // cancelled before the request went out: send nothing
    auto failure = co_await attempt();
    if (!sink_ || !failure) co_return;  // finished or cancelled
    bool again = failure->retryable && !text_sent_ && retry < retry_.max_retries &&
                 (!failure->retry_after || *failure->retry_after <= retry_.max_retry_after);
    log::warn("provider_attempt_failed", {{"provider", display_name()}, {"origin", request_.url.origin()},
                                          {"code", failure->code}, {"attempt", retry + 1}, {"will_retry", again}});
    if (!again) {
      fail(*failure);
      co_return;
    }
    backoff_timer_.expires_after(failure->retry_after ? *failure->retry_after : backoff(retry));
    co_await backoff_timer_.async_wait(kTuple);
    if (!sink_) co_return;
  }
}

asio::awaitable<std::optional<ProviderFailure>> StreamGeneration::attempt() {
  call_ = std::make_shared<HttpCall>(client_, strand_);
  auto call = call_;  // cancel() may look at call_; this attempt keeps its own
  auto ec = co_await call->start(request_);
  if (!sink_) co_return std::nullopt;
  if (ec) co_return transport_failure(ec, call->phase());

  auto status = call->status();
  if (status / 100 != 2) {
    auto body = co_await read_error_body();
    if (!sink_) co_return std::nullopt;
    auto retry_after = parse_retry_after(call->header("retry-after"), call->header("retry-after-ms"));
    co_return failure_from_status(display_name(), status, error_message_from_body(body), retry_after);
  }
  auto content_type = call->header("content-type");
  if (!content_type.empty() && !contains_ci(content_type, "text/event-stream")) {
    // E.g. a server that ignored "stream": true, or an HTML page from a proxy.
    auto body = co_await read_error_body();
    if (!sink_) co_return std::nullopt;
    auto detail = error_message_from_body(body);
    co_return ProviderFailure{std::string(provider_code::kBadResponse),
                              std::string(display_name()) + " answered with " + content_type +
                                  " instead of an event stream" + (detail.empty() ? "" : ": " + detail),
                              false, std::nullopt};
  }

  decoder_ = protocol_->decoder();
  http_client::EventStreamParser parser;
  std::string bytes;
  std::string text;
  std::vector<http_client::StreamEvent> events;
  // Keep-alives (comments, Anthropic's pings) reset the read timeout but are
  // no reply: a provider that sends nothing else that long has stalled, and
  // would hold the worker's slot for ever.
  const auto stall_limit = client_->options().read_timeout;
  auto last_event = std::chrono::steady_clock::now();
  for (;;) {
    bytes.clear();
    ec = co_await call->read_body(bytes);
    if (!sink_) co_return std::nullopt;
    if (ec) co_return body_lost(ec, *call);
    events.clear();
    if (!parser.feed(bytes, events))
      co_return ProviderFailure{std::string(provider_code::kBadResponse),
                                std::string(display_name()) + " sent an oversized event", false, std::nullopt};
    bool body_done = call->done();
    if (body_done) parser.finish(events);
    const auto now = std::chrono::steady_clock::now();
    if (std::any_of(events.begin(), events.end(), [](const auto& e) { return e.type != "ping"; })) {
      last_event = now;
    } else if (!body_done && now - last_event >= stall_limit) {
      call->abort();
      co_return ProviderFailure{std::string(provider_code::kTimeout),
                                std::string(display_name()) + " sent only keep-alives for " + seconds(stall_limit),
                                false, std::nullopt};
    }
    std::optional<StreamEnd> end;
    for (const auto& event : events) {
      text.clear();
      end = decoder_->on_event(event, text);
      if (!text.empty()) {
        text_sent_ = true;
        sink_->on_text(text);
      }
      if (end) break;
    }
    if (!end && body_done) end = decoder_->on_body_end();
    if (!end) continue;
    if (end->failure) {
      call->abort();
      co_return end->failure;
    }
    if (call->done()) call->release();  // pooled before the next request can look for it
    succeed(end->finish_reason);
    co_await drain_and_release();
    co_return std::nullopt;
  }
}

// The rest of a non-2xx body, bounded, for its error message.
asio::awaitable<std::string> StreamGeneration::read_error_body() {
  auto call = call_;
  std::string body;
  while (!call->done() && body.size() < kMaxErrorBody && sink_) {
    if (co_await call->read_body(body)) break;
  }
  if (call->done()) call->release();
  else call->abort();
  co_return body;
}

// After the end event the body's last bytes (the chunked terminator) are
// usually already here or close behind; reading them lets the connection go
// back to the pool. A server that keeps the body open is closed after a
// moment: the reply is over, and its socket must not pile up under load.
asio::awaitable<void> StreamGeneration::drain_and_release() {
  auto call = call_;
  if (call->done()) co_return;  // released already
  std::string rest;
  for (int reads = 0; !call->done() && reads < 4 && rest.size() < kMaxDrain; ++reads) {
    if (co_await call->read_body(rest, kDrainWait)) break;
  }
  call->release();
}

// The connection was lost in the middle of the stream. After the reply said
// how it finished (before the stream's last event: [DONE], message_stop) the
// reply is whole and ends as it said; before, it failed.
std::optional<ProviderFailure> StreamGeneration::body_lost(const error_code& ec, HttpCall& call) {
  auto end = decoder_->on_body_end();
  if (end.failure) return transport_failure(ec, HttpCall::Phase::body);
  call.abort();
  succeed(end.finish_reason);
  return std::nullopt;
}

ProviderFailure StreamGeneration::transport_failure(const error_code& ec, HttpCall::Phase phase) const {
  std::string who(display_name());
  const auto& options = client_->options();
  ProviderFailure f;
  f.code = provider_code::kUnavailable;
  f.retryable = true;
  if (ec == HttpClientError::connect_timeout) {
    f.code = provider_code::kTimeout;
    f.message = "connecting to " + who + " timed out after " + seconds(options.connect_timeout);
  } else if (ec == HttpClientError::read_timeout) {
    // Not retried: a server that hangs tends to hang again, and each attempt
    // would cost the whole timeout while the user waits.
    f.code = provider_code::kTimeout;
    f.retryable = false;
    f.message = phase == HttpCall::Phase::body
                    ? who + " stopped sending for " + seconds(options.read_timeout) + " in the middle of the reply"
                    : who + " did not answer within " + seconds(options.read_timeout);
  } else if (ec == HttpClientError::proxy_refused || ec == HttpClientError::bad_proxy_response) {
    f.retryable = false;
    f.message = "the HTTPS proxy did not open a tunnel to " + who + ": " + ec.message();
  } else if (ec.category() == asio::error::get_ssl_category() || ec.category() == asio::ssl::error::get_stream_category()) {
    // Certificate problems do not go away by trying again.
    f.retryable = phase != HttpCall::Phase::connect;
    f.message = (phase == HttpCall::Phase::connect ? "TLS handshake with " + who + " failed: "
                                                   : "TLS error talking to " + who + ": ") + ec.message();
  } else if (ec.category() == boost::beast::http::make_error_code(boost::beast::http::error::end_of_stream).category() &&
             ec != boost::beast::http::error::end_of_stream && ec != boost::beast::http::error::partial_message) {
    f.code = provider_code::kBadResponse;
    f.retryable = false;
    f.message = who + " sent a malformed HTTP response: " + ec.message();
  } else if (phase == HttpCall::Phase::connect) {
    f.message = "cannot connect to " + who + ": " + ec.message();
  } else if (phase == HttpCall::Phase::body) {
    f.message = who + " closed the connection in the middle of the reply: " + ec.message();
  } else {
    f.message = "the connection to " + who + " failed before an answer: " + ec.message();
  }
  return f;
}

std::chrono::milliseconds StreamGeneration::backoff(unsigned retry) const {
  thread_local std::minstd_rand rng{std::random_device{}()};
  auto base = retry_.backoff_base.count() << std::min(retry, 20u);
  auto capped = std::min<long long>(base, retry_.backoff_max.count());
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  return std::chrono::milliseconds{static_cast<long long>(static_cast<double>(capped) * jitter(rng))};
}

void StreamGeneration::succeed(const std::string& finish_reason) {
  if (!sink_) return;
  auto sink = std::move(sink_);
  Finish finish{finish_reason, std::nullopt, model_};
  if (decoder_) {
    finish.tokens_used = decoder_->tokens_used();
    if (auto m = decoder_->model(); !m.empty()) finish.model = std::move(m);
  }
  sink->on_finish(finish);
}

void StreamGeneration::fail(const ProviderFailure& failure) {
  if (!sink_) return;
  auto sink = std::move(sink_);
  sink->on_error(failure.code, sanitize_message(failure.message, secret_));
}

}  // namespace chat::providers
