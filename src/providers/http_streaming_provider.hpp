#pragma once
// A provider that streams its replies over HTTP. `openai` and `anthropic` are
// this one class, each with its WireProtocol; every reply is a
// StreamGeneration on the shared HttpClient (no thread per reply). Without an
// API key every request ends with the provider_not_configured error.

#include <memory>
#include <string>

#include "http_client/client.hpp"
#include "providers/provider.hpp"
#include "providers/stream_generation.hpp"
#include "providers/wire_protocol.hpp"

namespace chat::providers {

struct HttpStreamingSettings {
  std::string api_key;  // secret
  std::string base_url;  // OPENAI_BASE_URL, ANTHROPIC_BASE_URL
  std::string default_model;
  RetryPolicy retry;
};

class HttpStreamingProvider final : public Provider {
 public:
  // Throws std::invalid_argument when settings.base_url is not an http(s) URL.
  HttpStreamingProvider(std::shared_ptr<http_client::HttpClient> client, std::shared_ptr<const WireProtocol> protocol,
                        HttpStreamingSettings settings);

  std::string_view name() const override { return protocol_->names().provider; }
  std::string default_model() const override { return settings_.default_model; }
  std::shared_ptr<Generation> start(const protocol::WorkflowRequest& request, std::string model,
                                    std::shared_ptr<GenerationSink> sink, TraceHeaders trace = {}) override;

 private:
  std::shared_ptr<http_client::HttpClient> client_;
  std::shared_ptr<const WireProtocol> protocol_;
  HttpStreamingSettings settings_;
  http_client::HttpUrl endpoint_;  // base URL + the protocol's endpoint, without userinfo
};

}  // namespace chat::providers
