#pragma once
// The `openai` provider: OpenAI Chat Completions streaming, or any compatible
// server at OPENAI_BASE_URL. Without a key every request ends with the
// provider_not_configured error.

#include <memory>
#include <string>

#include "http_client/client.hpp"
#include "providers/provider.hpp"
#include "providers/provider_stream.hpp"

namespace chat::providers {

struct OpenAiSettings {
  std::string api_key;  // secret
  std::string base_url = "https://api.openai.com/v1";
  std::string default_model = "gpt-4o-mini";
  StreamOptions stream;
};

class OpenAiProvider final : public Provider {
 public:
  // Throws std::invalid_argument when base_url is not an http(s) URL.
  OpenAiProvider(std::shared_ptr<http_client::HttpClient> client, OpenAiSettings settings);

  std::string_view name() const override { return "openai"; }
  std::string default_model() const override { return settings_.default_model; }
  std::shared_ptr<Generation> start(const protocol::WorkflowRequest& request, std::string model,
                                    std::shared_ptr<GenerationSink> sink) override;

 private:
  std::shared_ptr<http_client::HttpClient> client_;
  OpenAiSettings settings_;
  http_client::HttpUrl base_;
  std::shared_ptr<const StreamProtocol> protocol_;
};

}  // namespace chat::providers
