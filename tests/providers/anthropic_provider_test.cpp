// The anthropic provider against a real local HTTP server that speaks the
// Messages streaming format, error events included.
#include <gtest/gtest.h>

#include "http_client/client_loop.hpp"
#include "http_client/fake_http_server.hpp"
#include "providers/anthropic_protocol.hpp"
#include "providers/http_streaming_provider.hpp"
#include "providers/recording_sink.hpp"

using namespace std::chrono_literals;

namespace chat::providers::test {
namespace {

using namespace http_client::test;

constexpr const char* kKey = "sk-ant-api03-test-secret-key";

std::string event(std::string_view name, std::string_view data) {
  return "event: " + std::string(name) + "\ndata: " + std::string(data) + "\n\n";
}
const std::string kStart = event(
    "message_start",
    R"({"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-haiku-4-5-20251001","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}})");
const std::string kBlockStart =
    event("content_block_start", R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})");
const std::string kPing = event("ping", R"({"type": "ping"})");
std::string text_delta(std::string_view t) {
  return event("content_block_delta",
               R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":")" + std::string(t) + "\"}}");
}
const std::string kBlockStop = event("content_block_stop", R"({"type":"content_block_stop","index":0})");
std::string message_delta(std::string_view stop_reason, int output_tokens) {
  return event("message_delta", R"({"type":"message_delta","delta":{"stop_reason":")" + std::string(stop_reason) +
                                    R"(","stop_sequence":null},"usage":{"output_tokens":)" + std::to_string(output_tokens) +
                                    "}}");
}
const std::string kStop = event("message_stop", R"({"type":"message_stop"})");
std::string error_event(std::string_view type, std::string_view message) {
  return event("error", R"({"type":"error","error":{"type":")" + std::string(type) + R"(","message":")" +
                            std::string(message) + "\"}}");
}

Script happy_stream(std::string_view stop_reason = "end_turn") {
  return sse_script({kStart, kBlockStart, kPing, text_delta("Hello"), text_delta(", "), text_delta("world"), kBlockStop,
                     message_delta(stop_reason, 15), kStop});
}

class AnthropicTest : public ::testing::Test {
 protected:
  std::shared_ptr<HttpStreamingProvider> provider(const FakeServer& server, std::string key = kKey) {
    HttpStreamingSettings s;
    s.api_key = std::move(key);
    s.base_url = server.base_url();
    s.retry.backoff_base = 10ms;
    return std::make_shared<HttpStreamingProvider>(loop.client(), std::make_shared<AnthropicProtocol>("2023-06-01"), s);
  }
  std::shared_ptr<RecordingSink> run(Provider& p, protocol::WorkflowRequest r = chat_request()) {
    auto sink = std::make_shared<RecordingSink>();
    generations.push_back(p.start(r, "claude-haiku-4-5", sink));
    EXPECT_TRUE(sink->wait(15s));
    EXPECT_EQ(sink->finals(), 1);
    EXPECT_EQ(sink->calls_after_final(), 0);
    return sink;
  }

  ClientLoop loop;
  std::vector<std::shared_ptr<Generation>> generations;
};

TEST_F(AnthropicTest, StreamsTextAndSendsTheRightRequest) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); });
  auto p = provider(server);
  auto r = chat_request("Next question");
  r.context.system_prompt = "Be kind.";
  r.context.temperature = 0.5;
  r.context.conversation_history = {{"system", "Earlier note."}, {"user", "One"}, {"user", "Two"}, {"assistant", "Yes?"}};
  auto sink = run(*p, r);

  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"Hello", ", ", "world"}));
  ASSERT_TRUE(sink->finish());
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_EQ(sink->finish()->tokens_used, 15);  // output_tokens
  EXPECT_EQ(sink->finish()->model, "claude-haiku-4-5-20251001");

  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& req = requests[0];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/v1/messages");
  EXPECT_EQ(req.header("x-api-key"), kKey);
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

TEST_F(AnthropicTest, MaxTokensStopIsLength) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream("max_tokens"); });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->finish()->finish_reason, "length");
}

TEST_F(AnthropicTest, CrlfAndSplitUtf8) {
  std::string e = text_delta("\xE2\x82\xAC and \xF0\x9F\x8C\x8D");
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    auto cut = e.find("\xF0") + 2;
    std::string all = kStart + kBlockStart;
    std::string crlf_all;
    for (char c : all) {
      if (c == '\n') crlf_all += "\r\n";
      else crlf_all.push_back(c);
    }
    return Script{write(sse_head()), write(chunk(crlf_all)), write(chunk(e.substr(0, cut))), sleep(30ms),
                  write(chunk(e.substr(cut))), write(chunk(message_delta("end_turn", 3) + kStop)), write(last_chunk())};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"\xE2\x82\xAC and \xF0\x9F\x8C\x8D"}));
  EXPECT_EQ(sink->finish()->tokens_used, 3);
}

TEST_F(AnthropicTest, ErrorEventMidStreamEndsWithItsTypeAndMessage) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return sse_script({kStart, kBlockStart, text_delta("Par"), error_event("overloaded_error", "Overloaded")});
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "Par");
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("overloaded_error"), std::string::npos);
  EXPECT_NE(sink->error_message().find("Overloaded"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_F(AnthropicTest, ErrorEventBeforeAnyTextIsRetried) {
  FakeServer server([](const ReceivedRequest&, std::size_t index) {
    if (index == 0) return sse_script({kStart, error_event("overloaded_error", "Overloaded")});
    return happy_stream();
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "Hello, world");
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST_F(AnthropicTest, InvalidRequestErrorEventIsNotRetried) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return sse_script({error_event("invalid_request_error", "messages: text content blocks must be non-empty")});
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_error");
  EXPECT_NE(sink->error_message().find("non-empty"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_F(AnthropicTest, AuthenticationError401) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(response(401, "application/json",
                                 R"({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}})"))};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_auth_failed");
  EXPECT_NE(sink->error_message().find("invalid x-api-key"), std::string::npos);
  EXPECT_EQ(sink->error_message().find(kKey), std::string::npos);
}

TEST_F(AnthropicTest, NotFound404AndOverloaded529) {
  FakeServer server([](const ReceivedRequest& r, std::size_t) {
    if (r.json().as_object().at("model") == "claude-none")
      return Script{write(response(404, "application/json",
                                   R"({"type":"error","error":{"type":"not_found_error","message":"model: claude-none"}})"))};
    return Script{write(response(529, "application/json",
                                 R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})"))};
  });
  auto p = provider(server);
  auto sink = std::make_shared<RecordingSink>();
  auto g = p->start(chat_request(), "claude-none", sink);
  ASSERT_TRUE(sink->wait());
  EXPECT_EQ(sink->error_code(), "model_not_found");
  EXPECT_NE(sink->error_message().find("claude-none"), std::string::npos);

  auto overloaded = run(*p);
  EXPECT_EQ(overloaded->error_code(), "provider_unavailable");
  EXPECT_EQ(server.requests().size(), 4u);  // 1 + 3 attempts at the 529
}

TEST_F(AnthropicTest, MissingKeyIsNotConfigured) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); });
  auto p = provider(server, "");
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_not_configured");
  EXPECT_EQ(sink->error_message(), "ANTHROPIC_API_KEY is not set");
}

TEST_F(AnthropicTest, CancelMidStream) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(kStart + kBlockStart + text_delta("one"))), hang()};
  });
  auto p = provider(server);
  auto sink = std::make_shared<RecordingSink>();
  auto g = p->start(chat_request(), "claude-haiku-4-5", sink);
  ASSERT_TRUE(sink->wait_text());
  auto cancelled_at = std::chrono::steady_clock::now();
  g->cancel();
  ASSERT_TRUE(sink->wait(2s));
  EXPECT_LT(*sink->ended_at() - cancelled_at, 200ms);
  EXPECT_EQ(sink->finish()->finish_reason, "cancelled");
  EXPECT_EQ(sink->finish()->model, "claude-haiku-4-5-20251001");
  EXPECT_TRUE(server.wait_client_closes(1, 2s));
}

}  // namespace
}  // namespace chat::providers::test
