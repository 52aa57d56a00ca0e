#pragma once
// One reply of an HTTP streaming provider: a coroutine on its own strand that
// sends the request, retries with backoff while no text was sent, feeds the
// event stream through an EventStreamParser into the protocol's
// StreamDecoder, and reports to the sink. What differs between providers
// comes from the WireProtocol; everything here is the same for all of them.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "http_client/call.hpp"
#include "providers/provider.hpp"
#include "providers/provider_errors.hpp"
#include "providers/wire_protocol.hpp"

namespace chat::providers {

// Attempts after a retryable failure, only while no text was sent.
struct RetryPolicy {
  unsigned max_retries = 2;
  std::chrono::milliseconds backoff_base{500};  // doubles per retry, ±25% jitter
  std::chrono::milliseconds backoff_max{8'000};
  std::chrono::milliseconds max_retry_after{30'000};  // a longer Retry-After fails at once
};

class StreamGeneration final : public Generation, public std::enable_shared_from_this<StreamGeneration> {
 public:
  // `secret` is the API key: scrubbed from every message the sink gets.
  static std::shared_ptr<StreamGeneration> start(std::shared_ptr<http_client::HttpClient> client,
                                                 std::shared_ptr<const WireProtocol> protocol,
                                                 http_client::HttpRequest request, std::string model, std::string secret,
                                                 RetryPolicy retry, std::shared_ptr<GenerationSink> sink);

  StreamGeneration(std::shared_ptr<http_client::HttpClient> client, std::shared_ptr<const WireProtocol> protocol,
                   http_client::HttpRequest request, std::string model, std::string secret, RetryPolicy retry,
                   std::shared_ptr<GenerationSink> sink);

  void cancel() override;

 private:
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<std::optional<ProviderFailure>> attempt();
  boost::asio::awaitable<std::string> read_error_body();
  boost::asio::awaitable<void> drain_and_release();
  ProviderFailure transport_failure(const boost::system::error_code& ec, http_client::HttpCall::Phase phase) const;
  std::optional<ProviderFailure> body_lost(const boost::system::error_code& ec, http_client::HttpCall& call);
  std::chrono::milliseconds backoff(unsigned retry) const;
  std::string_view display_name() const { return protocol_->names().display; }
  void succeed(const std::string& finish_reason);
  void fail(const ProviderFailure& failure);

  boost::asio::strand<boost::asio::any_io_executor> strand_;
  std::shared_ptr<http_client::HttpClient> client_;
  std::shared_ptr<const WireProtocol> protocol_;
  http_client::HttpRequest request_;
  std::string model_;
  std::string secret_;
  RetryPolicy retry_;
  boost::asio::steady_timer backoff_timer_;
  // Strand-only below. sink_ is reset by the one final call, so a late
  // completion or a second cancel() finds nothing to report to.
  std::shared_ptr<GenerationSink> sink_;
  std::shared_ptr<http_client::HttpCall> call_;
  std::unique_ptr<StreamDecoder> decoder_;
  bool text_sent_ = false;
};

}  // namespace chat::providers
