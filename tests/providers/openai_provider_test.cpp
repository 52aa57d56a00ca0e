// What only the openai provider does, against a real local HTTP server that
// speaks the Chat Completions streaming format: the request as it arrives,
// and a stream without a usage event. Everything it shares with the other
// HTTP streaming providers is in http_streaming_provider_test.cpp.
#include <gtest/gtest.h>

#include "providers/wire_scripts.hpp"

namespace chat::providers::test {
namespace {

using namespace http_client::test;

class OpenAiTest : public ::testing::Test, protected ProviderHarness {
 protected:
  const WireScript& wire = openai_wire();
};

// A base URL that carries a parameter as a query (an API version): every request keeps it.
TEST_F(OpenAiTest, ABaseUrlsQueryGoesWithTheRequest) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return wire.reply({"Hi"}, 1); });
  auto s = settings(wire, server);
  s.base_url = server.base_url() + "/openai/deployments/d1?api-version=2024-06-01";
  HttpStreamingProvider provider(loop.client(http_client::test::ClientLoop::fast_options()), wire.protocol(), s);
  auto sink = run(provider, wire.model(), chat_request("Hi"));
  EXPECT_EQ(sink->text(), "Hi");
  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].target, "/openai/deployments/d1/chat/completions?api-version=2024-06-01");
}

TEST_F(OpenAiTest, SendsTheRightRequest) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return wire.reply({"Hi"}, 1); });
  auto r = chat_request("What now?");
  r.context.system_prompt = "You are terse.";
  r.context.temperature = 0.25;
  r.context.max_tokens = 64;
  r.context.conversation_history = {{"user", "Hi"}, {"assistant", "Hello!"}, {"system", "note"}};
  auto sink = run(wire, server, r);
  EXPECT_EQ(sink->text(), "Hi");

  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& req = requests[0];
  EXPECT_EQ(req.target, "/v1/chat/completions");
  EXPECT_EQ(req.header("authorization"), "Bearer " + wire.key());
  EXPECT_EQ(req.header("content-type"), "application/json");
  EXPECT_EQ(req.header("accept"), "text/event-stream");
  auto body = req.json().as_object();
  EXPECT_EQ(body.at("model"), "gpt-4o-mini");
  EXPECT_EQ(body.at("stream"), true);
  EXPECT_EQ(body.at("stream_options").at("include_usage"), true);
  EXPECT_EQ(body.at("temperature").as_double(), 0.25);
  EXPECT_EQ(body.at("max_tokens").as_int64(), 64);
  const auto& m = body.at("messages").as_array();
  ASSERT_EQ(m.size(), 5u);
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& v : m) got.emplace_back(v.at("role").as_string(), v.at("content").as_string());
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{{"system", "You are terse."},
                                                                  {"user", "Hi"},
                                                                  {"assistant", "Hello!"},
                                                                  {"system", "note"},
                                                                  {"user", "What now?"}}));
}

TEST_F(OpenAiTest, WithoutAUsageEventTokensAreUnknown) {
  // A finish reason and [DONE], but no usage event (servers that ignore stream_options).
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({wire.opening(), wire.text("x"),
                       "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n", wire.end()});
  });
  auto sink = run(wire, server);
  ASSERT_TRUE(sink->finish());
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_EQ(sink->finish()->tokens_used, std::nullopt);
}

}  // namespace
}  // namespace chat::providers::test
