#include "providers/openai_provider.hpp"

#include <stdexcept>

#include "providers/openai_protocol.hpp"

namespace chat::providers {

OpenAiProvider::OpenAiProvider(std::shared_ptr<http_client::HttpClient> client, OpenAiSettings settings)
    : client_(std::move(client)), settings_(std::move(settings)), protocol_(std::make_shared<OpenAiProtocol>()) {
  auto base = http_client::parse_http_url(settings_.base_url);
  if (!base) throw std::invalid_argument("OPENAI_BASE_URL: expected an http:// or https:// URL");
  base_ = std::move(*base);
}

std::shared_ptr<Generation> OpenAiProvider::start(const protocol::WorkflowRequest& request, std::string model,
                                                  std::shared_ptr<GenerationSink> sink) {
  if (settings_.api_key.empty())
    return failed_generation(client_->executor(), std::move(sink), "provider_not_configured", "OPENAI_API_KEY is not set");
  auto http = openai_http_request(base_, settings_.api_key, request, model);
  return StreamGeneration::start(client_, protocol_, std::move(http), std::move(model), settings_.api_key,
                                 settings_.stream, std::move(sink));
}

}  // namespace chat::providers
