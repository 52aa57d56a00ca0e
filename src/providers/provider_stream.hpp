#pragma once
// The engine shared by the HTTP streaming providers (openai, anthropic): one
// StreamGeneration per reply runs a coroutine on its own strand that sends the
// request, retries with backoff while no text was sent, feeds the event stream
// through an http_client::EventStreamParser into the provider's StreamDecoder, and reports to the
// sink. A provider only says how to decode its events and read its errors.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "http_client/call.hpp"
#include "http_client/event_stream_parser.hpp"
#include "providers/provider.hpp"
#include "providers/provider_errors.hpp"

namespace chat::providers {

// How a provider's event stream ended: a finish reason, or a failure.
struct StreamEnd {
  std::string finish_reason = "stop";  // stop | length
  std::optional<ProviderFailure> failure;
};

// Decodes one attempt's events. Pure: no I/O, so tests feed it directly.
class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;
  // Appends the reply text carried by `event` to `text`; returns the end when
  // the event ends the reply (normally or with an error).
  virtual std::optional<StreamEnd> on_event(const http_client::StreamEvent& event, std::string& text) = 0;
  // The HTTP body ended before an end event.
  virtual StreamEnd on_body_end() = 0;
  virtual std::optional<std::int64_t> tokens_used() const = 0;
  virtual std::string model() const = 0;  // as the provider named it; empty if unknown
};

class StreamProtocol {
 public:
  virtual ~StreamProtocol() = default;
  virtual std::string_view display_name() const = 0;  // "OpenAI": for people
  virtual std::unique_ptr<StreamDecoder> decoder() const = 0;
  // A non-2xx answer. The default reads the common JSON error shapes.
  virtual ProviderFailure http_failure(unsigned status, std::string_view body,
                                       std::optional<std::chrono::milliseconds> retry_after) const;
};

struct StreamOptions {
  unsigned max_retries = 2;
  std::chrono::milliseconds backoff_base{500};  // doubles per retry, ±25% jitter
  std::chrono::milliseconds backoff_max{8'000};
  std::chrono::milliseconds max_retry_after{30'000};  // a longer Retry-After fails at once
};

class StreamGeneration final : public Generation, public std::enable_shared_from_this<StreamGeneration> {
 public:
  // `secret` is the API key: scrubbed from every message the sink gets.
  static std::shared_ptr<StreamGeneration> start(std::shared_ptr<http_client::HttpClient> client,
                                                 std::shared_ptr<const StreamProtocol> protocol, http_client::HttpRequest request,
                                                 std::string model, std::string secret, StreamOptions options,
                                                 std::shared_ptr<GenerationSink> sink);

  StreamGeneration(std::shared_ptr<http_client::HttpClient> client, std::shared_ptr<const StreamProtocol> protocol,
                   http_client::HttpRequest request, std::string model, std::string secret, StreamOptions options,
                   std::shared_ptr<GenerationSink> sink);

  void cancel() override;

 private:
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<std::optional<ProviderFailure>> attempt();
  boost::asio::awaitable<std::string> read_error_body();
  boost::asio::awaitable<void> drain_and_release();
  ProviderFailure transport_failure(const boost::system::error_code& ec, http_client::HttpCall::Phase phase) const;
  std::chrono::milliseconds backoff(unsigned retry) const;
  void succeed(const std::string& finish_reason);
  void fail(const ProviderFailure& failure);

  boost::asio::strand<boost::asio::any_io_executor> strand_;
  std::shared_ptr<http_client::HttpClient> client_;
  std::shared_ptr<const StreamProtocol> protocol_;
  http_client::HttpRequest request_;
  std::string model_;
  std::string secret_;
  StreamOptions options_;
  boost::asio::steady_timer backoff_timer_;
  // Strand-only below. sink_ is reset by the one final call, so a late
  // completion or a second cancel() finds nothing to report to.
  std::shared_ptr<GenerationSink> sink_;
  std::shared_ptr<http_client::HttpCall> call_;
  std::unique_ptr<StreamDecoder> decoder_;
  bool text_sent_ = false;
};

// For a provider that cannot run (no key): reports `code`/`message` once, on
// `executor`, never synchronously inside Provider::start.
std::shared_ptr<Generation> failed_generation(boost::asio::any_io_executor executor, std::shared_ptr<GenerationSink> sink,
                                              std::string code, std::string message);

}  // namespace chat::providers
