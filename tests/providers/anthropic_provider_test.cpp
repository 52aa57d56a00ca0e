// What only the anthropic provider does, against a real local HTTP server
// that speaks the Messages streaming format: the request as it arrives, and
// error events inside the stream. Everything it shares with the other HTTP
// streaming providers is in http_streaming_provider_test.cpp.
#include <gtest/gtest.h>

#include "providers/wire_scripts.hpp"

namespace chat::providers::test {
namespace {

using namespace http_client::test;

std::string error_event(std::string_view type, std::string_view message) {
  return "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"" + std::string(type) + "\",\"message\":\"" +
         std::string(message) + "\"}}\n\n";
}

class AnthropicTest : public ::testing::Test, protected ProviderHarness {
 protected:
  const WireScript& wire = anthropic_wire();
};

TEST_F(AnthropicTest, SendsTheRightRequest) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return wire.reply({"Hi"}, 1); });
  auto r = chat_request("Next question");
  r.context.system_prompt = "Be kind.";
  r.context.temperature = 0.5;
  r.context.conversation_history = {{"system", "Earlier note."}, {"user", "One"}, {"user", "Two"}, {"assistant", "Yes?"}};
  auto sink = run(wire, server, r);
  EXPECT_EQ(sink->text(), "Hi");

  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& req = requests[0];
  EXPECT_EQ(req.target, "/v1/messages");
  EXPECT_EQ(req.header("x-api-key"), wire.key());
  EXPECT_EQ(req.header("anthropic-version"), "2023-06-01");
  EXPECT_EQ(req.header("content-type"), "application/json");
  EXPECT_EQ(req.header("authorization"), "");
  auto body = req.json().as_object();
  EXPECT_EQ(body.at("model"), "claude-haiku-4-5");
  EXPECT_EQ(body.at("stream"), true);
  EXPECT_EQ(body.at("max_tokens").as_int64(), 1024);
  EXPECT_EQ(body.at("temperature").as_double(), 0.5);
  EXPECT_EQ(body.at("system"), "Be kind.\n\nEarlier note.");
  const auto& m = body.at("messages").as_array();
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].at("role"), "user");
  EXPECT_EQ(m[0].at("content"), "One\n\nTwo");
  EXPECT_EQ(m[1].at("role"), "assistant");
  EXPECT_EQ(m[2].at("role"), "user");
  EXPECT_EQ(m[2].at("content"), "Next question");
}

TEST_F(AnthropicTest, ErrorEventMidStreamEndsWithItsTypeAndMessage) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({wire.opening(), wire.text("Par"), error_event("overloaded_error", "Overloaded")});
  });
  auto sink = run(wire, server);
  EXPECT_EQ(sink->text(), "Par");
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("overloaded_error"), std::string::npos);
  EXPECT_NE(sink->error_message().find("Overloaded"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_F(AnthropicTest, ErrorEventBeforeAnyTextIsRetried) {
  FakeServer server([&](const ReceivedRequest&, std::size_t index) {
    if (index == 0) return sse_script({wire.opening(), error_event("overloaded_error", "Overloaded")});
    return wire.reply({"Hello", ", ", "world"}, 15);
  });
  auto sink = run(wire, server);
  EXPECT_EQ(sink->text(), "Hello, world");
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST_F(AnthropicTest, InvalidRequestErrorEventIsNotRetried) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return sse_script({error_event("invalid_request_error", "messages: text content blocks must be non-empty")});
  });
  auto sink = run(wire, server);
  EXPECT_EQ(sink->error_code(), "provider_error");
  EXPECT_NE(sink->error_message().find("non-empty"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);
}

}  // namespace
}  // namespace chat::providers::test
