// make_providers(): the provider settings as config::load reads them, the
// three providers it returns, and start-up errors for settings that cannot work.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include <map>

#include "providers/provider_factory.hpp"
#include "providers/recording_sink.hpp"

namespace chat::providers {
namespace {

config::EnvLookup lookup(std::map<std::string, std::string> env) {
  return [env = std::move(env)](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ProviderFactory, DefaultsWithoutAnySetting) {
  auto config = config::load(config::Program::worker, {}, lookup({}));
  const auto& p = config.providers;
  EXPECT_EQ(p.openai_api_key, "");
  EXPECT_EQ(p.openai_base_url, "https://api.openai.com/v1");
  EXPECT_EQ(p.openai_default_model, "gpt-4o-mini");
  EXPECT_EQ(p.anthropic_base_url, "https://api.anthropic.com");
  EXPECT_EQ(p.anthropic_version, "2023-06-01");
  EXPECT_EQ(p.connect_timeout, std::chrono::seconds(10));
  EXPECT_EQ(p.read_timeout, std::chrono::seconds(60));
  EXPECT_EQ(p.max_retries, 2u);
  EXPECT_FALSE(p.https_proxy);

  boost::asio::io_context ioc;
  auto providers = make_providers(ioc.get_executor(), config);
  ASSERT_EQ(providers.size(), 3u);
  EXPECT_EQ(providers[0]->name(), "demo");
  EXPECT_EQ(providers[1]->name(), "openai");
  EXPECT_EQ(providers[1]->default_model(), "gpt-4o-mini");
  EXPECT_EQ(providers[2]->name(), "anthropic");
  EXPECT_EQ(providers[2]->default_model(), "claude-haiku-4-5");

  // No keys: each request ends with provider_not_configured, nothing is sent.
  protocol::WorkflowRequest request;
  request.message = "hi";
  auto openai = std::make_shared<test::RecordingSink>();
  auto anthropic = std::make_shared<test::RecordingSink>();
  auto g1 = providers[1]->start(request, "gpt-4o-mini", openai);
  auto g2 = providers[2]->start(request, "claude-haiku-4-5", anthropic);
  EXPECT_EQ(openai->finals(), 0);  // reported on the executor, not inside start()
  ioc.run();
  EXPECT_EQ(openai->error_code(), "provider_not_configured");
  EXPECT_EQ(openai->error_message(), "OPENAI_API_KEY is not set");
  EXPECT_EQ(anthropic->error_code(), "provider_not_configured");
  EXPECT_EQ(anthropic->error_message(), "ANTHROPIC_API_KEY is not set");
  g1->cancel();  // after the end: nothing happens
  EXPECT_EQ(openai->finals(), 1);
}

TEST(ProviderFactory, SettingsFromEnvironmentAndFlags) {
  auto config = config::load(config::Program::chatd, {"--worker-provider-max-retries=0"},
                             lookup({{"OPENAI_API_KEY", "sk-env"},
                                     {"OPENAI_BASE_URL", "http://127.0.0.1:11434/v1"},
                                     {"OPENAI_DEFAULT_MODEL", "llama3.2"},
                                     {"ANTHROPIC_API_KEY", "sk-ant-env"},
                                     {"ANTHROPIC_DEFAULT_MODEL", "claude-sonnet-4-5"},
                                     {"ANTHROPIC_VERSION", "2023-06-01"},
                                     {"WORKER_PROVIDER_CONNECT_TIMEOUT", "3s"},
                                     {"WORKER_PROVIDER_READ_TIMEOUT", "2m"},
                                     {"HTTPS_PROXY", "proxy.corp:3128"},
                                     {"NO_PROXY", "localhost,.internal"}}));
  const auto& p = config.providers;
  EXPECT_EQ(p.openai_api_key, "sk-env");
  EXPECT_EQ(p.openai_base_url, "http://127.0.0.1:11434/v1");
  EXPECT_EQ(p.openai_default_model, "llama3.2");
  EXPECT_EQ(p.anthropic_api_key, "sk-ant-env");
  EXPECT_EQ(p.anthropic_default_model, "claude-sonnet-4-5");
  EXPECT_EQ(p.connect_timeout, std::chrono::seconds(3));
  EXPECT_EQ(p.read_timeout, std::chrono::minutes(2));
  EXPECT_EQ(p.max_retries, 0u);
  EXPECT_EQ(p.https_proxy, "http://proxy.corp:3128");
  EXPECT_EQ(p.no_proxy, "localhost,.internal");

  boost::asio::io_context ioc;
  auto providers = make_providers(ioc.get_executor(), config);
  EXPECT_EQ(providers[1]->default_model(), "llama3.2");
  auto client = make_provider_http_client(ioc.get_executor(), p);
  EXPECT_TRUE(client->proxied(*http_client::parse_http_url("https://api.openai.com/v1")));
  EXPECT_FALSE(client->proxied(*http_client::parse_http_url("https://model.internal/v1")));
  EXPECT_FALSE(client->proxied(*http_client::parse_http_url("http://127.0.0.1:11434/v1")));
}

TEST(ProviderFactory, SettingsThatCannotWorkFailAtStart) {
  EXPECT_THROW(config::load(config::Program::worker, {}, lookup({{"OPENAI_BASE_URL", "api.openai.com/v1"}})),
               config::ConfigError);
  EXPECT_THROW(config::load(config::Program::worker, {}, lookup({{"ANTHROPIC_BASE_URL", "ftp://x"}})),
               config::ConfigError);
  EXPECT_THROW(config::load(config::Program::worker, {}, lookup({{"WORKER_PROVIDER_MAX_RETRIES", "-1"}})),
               config::ConfigError);
  EXPECT_THROW(config::load(config::Program::worker, {}, lookup({{"WORKER_PROVIDER_READ_TIMEOUT", "60"}})),
               config::ConfigError);
  auto config = config::load(config::Program::worker, {}, lookup({{"HTTPS_PROXY", "https://user:secret@proxy:443"}}));
  boost::asio::io_context ioc;
  try {
    make_providers(ioc.get_executor(), config);
    ADD_FAILURE() << "an https:// proxy must be refused";
  } catch (const config::ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos);  // credentials never echoed
  }
}

TEST(ProviderFactory, HelpListsProviderSettingsAndNoSecrets) {
  auto help = config::help_text(config::Program::worker);
  for (const char* name : {"OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_DEFAULT_MODEL", "ANTHROPIC_API_KEY",
                           "ANTHROPIC_BASE_URL", "ANTHROPIC_DEFAULT_MODEL", "ANTHROPIC_VERSION",
                           "WORKER_PROVIDER_CONNECT_TIMEOUT", "WORKER_PROVIDER_READ_TIMEOUT",
                           "WORKER_PROVIDER_MAX_RETRIES", "HTTPS_PROXY", "NO_PROXY"})
    EXPECT_NE(help.find(name), std::string::npos) << name;
  EXPECT_NE(config::help_text(config::Program::chatd).find("OPENAI_API_KEY"), std::string::npos);
}

}  // namespace
}  // namespace chat::providers
