#pragma once
// The `anthropic` provider: the Anthropic Messages streaming API. Without a
// key every request ends with the provider_not_configured error.

#include <memory>
#include <string>

#include "http_client/client.hpp"
#include "providers/provider.hpp"
#include "providers/provider_stream.hpp"

namespace chat::providers {

struct AnthropicSettings {
  std::string api_key;  // secret
  std::string base_url = "https://api.anthropic.com";
  std::string default_model = "claude-haiku-4-5";
  std::string version = "2023-06-01";
  StreamOptions stream;
};

class AnthropicProvider final : public Provider {
 public:
  // Throws std::invalid_argument when base_url is not an http(s) URL.
  AnthropicProvider(std::shared_ptr<http_client::HttpClient> client, AnthropicSettings settings);

  std::string_view name() const override { return "anthropic"; }
  std::string default_model() const override { return settings_.default_model; }
  std::shared_ptr<Generation> start(const protocol::WorkflowRequest& request, std::string model,
                                    std::shared_ptr<GenerationSink> sink) override;

 private:
  std::shared_ptr<http_client::HttpClient> client_;
  AnthropicSettings settings_;
  http_client::HttpUrl base_;
  std::shared_ptr<const StreamProtocol> protocol_;
};

}  // namespace chat::providers
