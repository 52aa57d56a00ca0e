#pragma once
// The composition root of the worker's providers: demo, openai and anthropic,
// sharing one HTTP client (one connection pool) on the given executor.

#include <boost/asio/any_io_executor.hpp>

#include <memory>
#include <vector>

#include "config/config.hpp"
#include "http_client/client.hpp"
#include "providers/provider.hpp"

namespace chat::providers {

// Throws config::ConfigError for settings that cannot work (a base URL that is
// not http(s), an https:// proxy). Missing API keys are not an error here:
// requests to that provider then end with provider_not_configured.
std::vector<std::shared_ptr<Provider>> make_providers(boost::asio::any_io_executor executor,
                                                      const config::Config& config);

// A provider that requests can name with this configuration, for clients to
// choose from (GET /api/providers).
struct ProviderSummary {
  std::string name;
  std::string default_model;
};

// demo always; openai and anthropic once their key is set; and the default
// provider (WORKER_DEFAULT_PROVIDER) in any case, since requests that name
// none go there. Says nothing about the keys themselves.
std::vector<ProviderSummary> enabled_providers(const config::Config& config);

// The HTTP client alone (tests, tools).
std::shared_ptr<http_client::HttpClient> make_provider_http_client(boost::asio::any_io_executor executor,
                                                      const config::ProviderConfig& config);

}  // namespace chat::providers
