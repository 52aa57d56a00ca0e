#include "providers/http_streaming_provider.hpp"

#include <boost/asio/post.hpp>

#include <stdexcept>
#include <utility>

namespace chat::providers {
namespace {

// A reply that could not start (no key). It reports on the executor, never
// inside Provider::start, like every other generation.
class FailedGeneration final : public Generation {
 public:
  void cancel() override {}  // it has already ended
};

std::shared_ptr<Generation> failed_generation(boost::asio::any_io_executor executor,
                                              std::shared_ptr<GenerationSink> sink, std::string code,
                                              std::string message) {
  boost::asio::post(executor, [sink = std::move(sink), code = std::move(code), message = std::move(message)] {
    sink->on_error(code, message);
  });
  return std::make_shared<FailedGeneration>();
}

}  // namespace

HttpStreamingProvider::HttpStreamingProvider(std::shared_ptr<http_client::HttpClient> client,
                                             std::shared_ptr<const WireProtocol> protocol,
                                             HttpStreamingSettings settings)
    : client_(std::move(client)), protocol_(std::move(protocol)), settings_(std::move(settings)) {
  auto base = http_client::parse_http_url(settings_.base_url);
  if (!base)
    throw std::invalid_argument(std::string(protocol_->names().base_url_setting) +
                                ": expected an http:// or https:// URL");
  endpoint_ = std::move(*base);
  endpoint_.userinfo.clear();
  endpoint_.path = http_client::join_path(endpoint_.path, protocol_->endpoint());
  // A base URL's query goes with every request (a server's ?api-version=...).
  if (!endpoint_.query.empty()) endpoint_.path += "?" + std::exchange(endpoint_.query, {});
}

std::shared_ptr<Generation> HttpStreamingProvider::start(const protocol::WorkflowRequest& request, std::string model,
                                                         std::shared_ptr<GenerationSink> sink, TraceHeaders trace) {
  if (settings_.api_key.empty())
    return failed_generation(client_->executor(), std::move(sink), std::string(provider_code::kNotConfigured),
                             std::string(protocol_->names().key_setting) + " is not set");
  http_client::HttpRequest http;
  http.url = endpoint_;
  http.headers = protocol_->auth_headers(settings_.api_key);
  http.headers.insert(http.headers.end(), {{"Content-Type", "application/json"},
                                           {"Accept", "text/event-stream"},
                                           {"Accept-Encoding", "identity"}});  // the client does not decompress
  for (auto& h : trace) http.headers.push_back(std::move(h));
  http.body = protocol_->body(request, model);
  return StreamGeneration::start(client_, protocol_, std::move(http), std::move(model), settings_.api_key,
                                 settings_.retry, std::move(sink));
}

}  // namespace chat::providers
