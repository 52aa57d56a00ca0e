// Where a provider request goes: http(s) URLs as the settings give them, and
// the NO_PROXY rules.
#include <gtest/gtest.h>

#include "http_client/url.hpp"

namespace chat::http_client {
namespace {

TEST(HttpUrl, ParsesWhatProvidersUse) {
  auto u = parse_http_url("https://api.openai.com/v1");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.openai.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(join_path(u->path, "/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(join_path("/v1/", "/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(join_path("/", "/v1/messages"), "/v1/messages");

  auto local = parse_http_url("http://127.0.0.1:11434/v1");
  ASSERT_TRUE(local);
  EXPECT_FALSE(local->tls);
  EXPECT_EQ(local->port, 11434);
  EXPECT_EQ(local->origin(), "http://127.0.0.1:11434");

  auto proxy = parse_http_url("http://us%40r:p%3Ass@proxy.local:3128");
  ASSERT_TRUE(proxy);
  EXPECT_EQ(proxy->userinfo, "us@r:p:ss");
  EXPECT_EQ(proxy->origin(), "http://proxy.local:3128");  // no credentials

  auto v6 = parse_http_url("http://[::1]:8080");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->authority(), "[::1]:8080");

  auto azure = parse_http_url("https://chat.openai.azure.com/openai/deployments/d1?api-version=2024-06-01");
  ASSERT_TRUE(azure);
  EXPECT_EQ(azure->path, "/openai/deployments/d1");
  EXPECT_EQ(azure->query, "api-version=2024-06-01");
  EXPECT_TRUE(local->query.empty());

  EXPECT_EQ(parse_http_url("http://h:65535")->port, 65535);
  for (auto bad : {"http://h:0", "http://h:65536", "http://h:80800", "http://h:99999", "http://h:114340",
                   "http://h:4294967297", "http://h:-1"})
    EXPECT_FALSE(parse_http_url(bad)) << bad;
  EXPECT_FALSE(parse_http_url("ftp://x"));
  EXPECT_FALSE(parse_http_url("api.openai.com/v1"));
  EXPECT_FALSE(parse_http_url(""));
}

TEST(HttpUrl, NoProxyRules) {
  EXPECT_TRUE(no_proxy_matches("*", "api.openai.com"));
  EXPECT_TRUE(no_proxy_matches("localhost, .openai.com", "api.openai.com"));
  EXPECT_TRUE(no_proxy_matches("openai.com", "api.openai.com"));
  EXPECT_TRUE(no_proxy_matches("openai.com", "OpenAI.com"));
  EXPECT_FALSE(no_proxy_matches("openai.com", "notopenai.com"));
  EXPECT_TRUE(no_proxy_matches("localhost:8080", "localhost"));
  EXPECT_FALSE(no_proxy_matches("", "api.anthropic.com"));
}

}  // namespace
}  // namespace chat::http_client
