#include "providers/provider_factory.hpp"

#include <stdexcept>

#include "log/log.hpp"
#include "providers/anthropic_protocol.hpp"
#include "providers/demo_provider.hpp"
#include "providers/http_streaming_provider.hpp"
#include "providers/openai_protocol.hpp"

namespace chat::providers {

std::shared_ptr<http_client::HttpClient> make_provider_http_client(boost::asio::any_io_executor executor,
                                                      const config::ProviderConfig& config) {
  http_client::HttpClientOptions options;
  options.connect_timeout = config.connect_timeout;
  options.read_timeout = config.read_timeout;
  options.no_proxy = config.no_proxy;
  if (config.https_proxy) {
    auto proxy = http_client::parse_http_url(*config.https_proxy);
    if (!proxy) throw config::ConfigError("HTTPS_PROXY: expected http://[user:pass@]host:port");
    if (proxy->tls) throw config::ConfigError("HTTPS_PROXY: only http:// proxies are supported (the tunnel itself is TLS)");
    options.https_proxy = std::move(*proxy);
  }
  try {
    return std::make_shared<http_client::HttpClient>(std::move(executor), std::move(options));
  } catch (const std::exception& e) {
    throw config::ConfigError(std::string("provider HTTP client: ") + e.what());
  }
}

std::vector<ProviderSummary> enabled_providers(const config::Config& config) {
  const auto& pc = config.providers;
  const auto& fallback = config.worker.default_provider;
  std::vector<ProviderSummary> list{{"demo", std::string(DemoProvider::kDefaultModel)}};
  if (!pc.openai_api_key.empty() || fallback == "openai") list.push_back({"openai", pc.openai_default_model});
  if (!pc.anthropic_api_key.empty() || fallback == "anthropic") list.push_back({"anthropic", pc.anthropic_default_model});
  return list;
}

std::vector<std::shared_ptr<Provider>> make_providers(boost::asio::any_io_executor executor,
                                                      const config::Config& config) {
  const auto& pc = config.providers;
  auto client = make_provider_http_client(executor, pc);
  RetryPolicy retry;
  retry.max_retries = pc.max_retries;

  std::vector<std::shared_ptr<Provider>> providers;
  providers.push_back(std::make_shared<DemoProvider>(
      executor, DemoOptions{config.worker.demo_chunk_delay, config.worker.demo_words_per_chunk}));
  try {
    providers.push_back(std::make_shared<HttpStreamingProvider>(
        client, std::make_shared<OpenAiProtocol>(),
        HttpStreamingSettings{pc.openai_api_key, pc.openai_base_url, pc.openai_default_model, retry}));
    providers.push_back(std::make_shared<HttpStreamingProvider>(
        client, std::make_shared<AnthropicProtocol>(pc.anthropic_version),
        HttpStreamingSettings{pc.anthropic_api_key, pc.anthropic_base_url, pc.anthropic_default_model, retry}));
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(e.what());
  }
  // Whether keys are set, never what they are.
  log::info("providers_ready", {{"openai_key_set", !pc.openai_api_key.empty()},
                                {"anthropic_key_set", !pc.anthropic_api_key.empty()},
                                {"https_proxy_set", pc.https_proxy.has_value()}});
  return providers;
}

}  // namespace chat::providers
