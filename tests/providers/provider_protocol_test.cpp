// The pure parts of the providers: error mapping and sanitising, request
// bodies, and both stream decoders fed event by event.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "providers/anthropic_protocol.hpp"
#include "providers/openai_protocol.hpp"
#include "providers/provider_errors.hpp"

namespace json = boost::json;

namespace chat::providers {
namespace {

protocol::WorkflowRequest conversation() {
  protocol::WorkflowRequest r;
  r.message = "And now?";
  r.context.system_prompt = "Be brief.";
  r.context.temperature = 1.5;
  r.context.max_tokens = 77;
  r.context.conversation_history = {{"assistant", "orphan reply"}, {"user", "Hi"},  {"user", "Anyone?"},
                                    {"system", "Mind the user."},  {"assistant", ""}, {"assistant", "Hello!"},
                                    {"user", "Question"}};
  return r;
}

protocol::WorkflowRequest test_minimal() {
  protocol::WorkflowRequest r;
  r.message = "Hi";
  return r;
}

TEST(ProviderErrors, StatusMapping) {
  EXPECT_EQ(failure_from_status("OpenAI", 401, "bad key", {}).code, "provider_auth_failed");
  EXPECT_EQ(failure_from_status("OpenAI", 403, "", {}).code, "provider_auth_failed");
  EXPECT_EQ(failure_from_status("OpenAI", 404, "", {}).code, "model_not_found");
  auto limited = failure_from_status("OpenAI", 429, "slow down", std::chrono::milliseconds(1500));
  EXPECT_EQ(limited.code, "rate_limited");
  EXPECT_TRUE(limited.retryable);
  EXPECT_EQ(limited.retry_after, std::chrono::milliseconds(1500));
  EXPECT_NE(limited.message.find("slow down"), std::string::npos);
  EXPECT_EQ(failure_from_status("Anthropic", 529, "Overloaded", {}).code, "provider_unavailable");
  EXPECT_TRUE(failure_from_status("OpenAI", 503, "", {}).retryable);
  EXPECT_EQ(failure_from_status("OpenAI", 400, "bad", {}).code, "provider_error");
  EXPECT_FALSE(failure_from_status("OpenAI", 400, "bad", {}).retryable);
}

TEST(ProviderErrors, MessagesFromBodies) {
  EXPECT_EQ(error_message_from_body(R"({"error":{"message":"m1","type":"t"}})"), "m1");
  EXPECT_EQ(error_message_from_body(R"({"type":"error","error":{"type":"x","message":"m2"}})"), "m2");
  EXPECT_EQ(error_message_from_body(R"({"error":"model 'x' not found"})"), "model 'x' not found");
  EXPECT_EQ(error_message_from_body(R"({"detail":"Not Found"})"), "Not Found");
  EXPECT_EQ(error_message_from_body("upstream connect error"), "upstream connect error");
  EXPECT_EQ(error_message_from_body("<html><body>502</body></html>"), "");
}

TEST(ProviderErrors, RetryAfter) {
  EXPECT_EQ(parse_retry_after("2", ""), std::chrono::milliseconds(2000));
  EXPECT_EQ(parse_retry_after("0.5", ""), std::chrono::milliseconds(500));
  EXPECT_EQ(parse_retry_after("2", "150"), std::chrono::milliseconds(150));
  EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", ""), std::nullopt);
  EXPECT_EQ(parse_retry_after("", ""), std::nullopt);
}

TEST(ProviderErrors, SanitizeRemovesKeysAndControlCharacters) {
  auto s = sanitize_message("Incorrect API key provided: sk-proj-abc***wxyz. Key sk-live-123 \x01 raw=MYSECRETKEY",
                            "MYSECRETKEY");
  EXPECT_EQ(s.find("abc"), std::string::npos);
  EXPECT_EQ(s.find("sk-live-123"), std::string::npos);
  EXPECT_EQ(s.find("MYSECRETKEY"), std::string::npos);
  EXPECT_EQ(s.find('\x01'), std::string::npos);
  EXPECT_NE(s.find("Incorrect API key provided: sk-***"), std::string::npos);
  EXPECT_EQ(sanitize_message("task-force", ""), "task-force");  // "sk-" inside a word is not a key
  EXPECT_LE(sanitize_message(std::string(5000, 'a'), "").size(), 410u);
  EXPECT_EQ(sanitize_message("caf\xC3\xA9 \xE4\xB8\x96 \xF0\x9F\x98\x80", ""), "caf\xC3\xA9 \xE4\xB8\x96 \xF0\x9F\x98\x80");
  EXPECT_EQ(sanitize_message("bad \xFF byte \xC3", ""), "bad \xEF\xBF\xBD byte \xEF\xBF\xBD");
}

TEST(OpenAiProtocol, RequestBody) {
  auto body = json::parse(OpenAiProtocol().body(conversation(), "gpt-4o-mini")).as_object();
  EXPECT_EQ(body.at("model"), "gpt-4o-mini");
  EXPECT_EQ(body.at("stream"), true);
  EXPECT_EQ(body.at("stream_options").at("include_usage"), true);
  EXPECT_EQ(body.at("temperature").as_double(), 1.5);
  EXPECT_EQ(body.at("max_tokens").as_int64(), 77);
  const auto& m = body.at("messages").as_array();
  ASSERT_EQ(m.size(), 9u);
  EXPECT_EQ(m[0].at("role"), "system");
  EXPECT_EQ(m[0].at("content"), "Be brief.");
  EXPECT_EQ(m[1].at("content"), "orphan reply");
  EXPECT_EQ(m[4].at("role"), "system");
  EXPECT_EQ(m[8].at("role"), "user");
  EXPECT_EQ(m[8].at("content"), "And now?");

  auto minimal = json::parse(OpenAiProtocol().body(test_minimal(), "m")).as_object();
  EXPECT_FALSE(minimal.contains("temperature"));
  EXPECT_FALSE(minimal.contains("max_tokens"));
  EXPECT_EQ(minimal.at("messages").as_array().size(), 1u);
}

TEST(AnthropicProtocol, RequestBodyFoldsSystemAndMergesTurns) {
  auto body = json::parse(AnthropicProtocol("2023-06-01").body(conversation(), "claude-x")).as_object();
  EXPECT_EQ(body.at("model"), "claude-x");
  EXPECT_EQ(body.at("stream"), true);
  EXPECT_EQ(body.at("max_tokens").as_int64(), 77);
  EXPECT_EQ(body.at("temperature").as_double(), 1.0);  // clamped to Anthropic's range
  EXPECT_EQ(body.at("system"), "Be brief.\n\nMind the user.");
  const auto& m = body.at("messages").as_array();
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].at("role"), "user");
  EXPECT_EQ(m[0].at("content"), "Hi\n\nAnyone?");
  EXPECT_EQ(m[1].at("role"), "assistant");
  EXPECT_EQ(m[1].at("content"), "Hello!");
  EXPECT_EQ(m[2].at("role"), "user");
  EXPECT_EQ(m[2].at("content"), "Question\n\nAnd now?");

  auto minimal = json::parse(AnthropicProtocol("2023-06-01").body(test_minimal(), "m")).as_object();
  EXPECT_EQ(minimal.at("max_tokens").as_int64(), kAnthropicDefaultMaxTokens);
  EXPECT_FALSE(minimal.contains("system"));
  EXPECT_FALSE(minimal.contains("temperature"));
}

http_client::StreamEvent data(std::string d, std::string type = "") { return http_client::StreamEvent{std::move(type), std::move(d), ""}; }

TEST(OpenAiDecoder, RoleDeltaTextUsageAndDone) {
  OpenAiDecoder d;
  std::string text;
  EXPECT_FALSE(d.on_event(data(R"({"model":"gpt-4o-mini-2024","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})"), text));
  EXPECT_EQ(text, "");
  EXPECT_FALSE(d.on_event(data(R"({"model":"x","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null})"), text));
  EXPECT_EQ(text, "Hi");
  EXPECT_FALSE(d.on_event(data(R"({"choices":[{"index":0,"delta":{},"finish_reason":"length"}]})"), text));
  EXPECT_FALSE(d.on_event(data(R"({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}})"), text));
  auto end = d.on_event(data("[DONE]"), text);
  ASSERT_TRUE(end);
  EXPECT_FALSE(end->failure);
  EXPECT_EQ(end->finish_reason, "length");
  EXPECT_EQ(d.tokens_used(), 9);
  EXPECT_EQ(d.model(), "gpt-4o-mini-2024");
}

TEST(OpenAiDecoder, FinishReasonsAndBadEvents) {
  {
    OpenAiDecoder d;
    std::string text;
    d.on_event(data(R"({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})"), text);
    EXPECT_EQ(d.on_event(data("[DONE]"), text)->finish_reason, "stop");
  }
  {
    OpenAiDecoder d;
    std::string text;
    d.on_event(data(R"({"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]})"), text);
    auto end = d.on_event(data("[DONE]"), text);
    ASSERT_TRUE(end && end->failure);
    EXPECT_EQ(end->failure->code, "content_filtered");
  }
  {
    OpenAiDecoder d;
    std::string text;
    auto end = d.on_event(data("{not json"), text);
    ASSERT_TRUE(end && end->failure);
    EXPECT_EQ(end->failure->code, "provider_bad_response");
  }
  {
    OpenAiDecoder d;
    std::string text;
    auto end = d.on_event(data(R"({"error":{"message":"server overloaded"}})"), text);
    ASSERT_TRUE(end && end->failure);
    EXPECT_EQ(end->failure->code, "provider_error");
    EXPECT_NE(end->failure->message.find("server overloaded"), std::string::npos);
  }
  {
    OpenAiDecoder d;
    std::string text;
    d.on_event(data(R"({"choices":[{"index":0,"delta":{"content":"x"}}]})"), text);
    auto end = d.on_body_end();
    ASSERT_TRUE(end.failure);
    EXPECT_EQ(end.failure->code, "provider_bad_response");
  }
}

TEST(AnthropicDecoder, FullStream) {
  AnthropicDecoder d;
  std::string text;
  EXPECT_FALSE(d.on_event(data(R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-haiku-4-5-20251001","stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}})", "message_start"), text));
  EXPECT_FALSE(d.on_event(data(R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"), text));
  EXPECT_FALSE(d.on_event(data(R"({"type": "ping"})", "ping"), text));
  EXPECT_FALSE(d.on_event(data(R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}})"), text));
  EXPECT_FALSE(d.on_event(data(R"({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}})"), text));
  EXPECT_EQ(text, "Hello");
  EXPECT_FALSE(d.on_event(data(R"({"type":"content_block_stop","index":0})"), text));
  EXPECT_FALSE(d.on_event(data(R"({"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":15}})"), text));
  auto end = d.on_event(data(R"({"type":"message_stop"})"), text);
  ASSERT_TRUE(end);
  EXPECT_FALSE(end->failure);
  EXPECT_EQ(end->finish_reason, "length");
  EXPECT_EQ(d.tokens_used(), 15);
  EXPECT_EQ(d.input_tokens(), 25);
  EXPECT_EQ(d.model(), "claude-haiku-4-5-20251001");
}

TEST(AnthropicDecoder, ErrorEvents) {
  AnthropicDecoder d;
  std::string text;
  auto end = d.on_event(data(R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})", "error"), text);
  ASSERT_TRUE(end && end->failure);
  EXPECT_EQ(end->failure->code, "provider_unavailable");
  EXPECT_TRUE(end->failure->retryable);
  EXPECT_NE(end->failure->message.find("overloaded_error"), std::string::npos);
  EXPECT_EQ(anthropic_failure("rate_limit_error", "").code, "rate_limited");
  EXPECT_EQ(anthropic_failure("authentication_error", "").code, "provider_auth_failed");
  EXPECT_EQ(anthropic_failure("not_found_error", "").code, "model_not_found");
  EXPECT_EQ(anthropic_failure("invalid_request_error", "").code, "provider_error");
}

}  // namespace
}  // namespace chat::providers

// Numbers from outside that do not fit: 1e400 parses as infinity, a count
// beyond int64 would wrap, a negative count is nonsense, and one beyond 2^53 - 1
// would make every pod refuse the final chunk that carries it. All read as absent.
namespace chat::providers {
namespace {

TEST(NonFiniteNumbers, OpenAiTokenCountsThatDoNotFitAreIgnored) {
  for (const char* n : {"1e400", "-1e400", "18446744073709551615", "9007199254740992", "-3", "2.5", "\"7\""}) {
    OpenAiDecoder d;
    std::string text;
    d.on_event(data(std::string(R"({"choices":[],"usage":{"completion_tokens":)") + n + "}}"), text);
    EXPECT_FALSE(d.tokens_used()) << n;
  }
}

TEST(NonFiniteNumbers, AnthropicTokenCountsThatDoNotFitAreIgnored) {
  for (const char* n : {"1e400", "-1e400", "18446744073709551615", "9007199254740992", "-3", "2.5"}) {
    AnthropicDecoder d;
    std::string text;
    d.on_event(data(std::string(R"({"type":"message_start","message":{"model":"m","usage":{"input_tokens":)") + n +
                    R"(,"output_tokens":)" + n + "}}}"),
               text);
    d.on_event(data(std::string(R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":)") +
                    n + "}}"),
               text);
    EXPECT_FALSE(d.tokens_used()) << n;
    EXPECT_FALSE(d.input_tokens()) << n;
  }
}

TEST(NonFiniteNumbers, TheLargestCountABrowserReadsExactlyIsKept) {
  OpenAiDecoder d;
  std::string text;
  d.on_event(data(R"({"choices":[],"usage":{"completion_tokens":9007199254740991}})"), text);
  EXPECT_EQ(d.tokens_used(), protocol::kMaxSafeInteger);
}

TEST(NonFiniteNumbers, RetryAfterRefusesInfinityAndNan) {
  for (const char* v : {"inf", "infinity", "nan", "1e400", "-1", "1e10"}) {
    EXPECT_FALSE(parse_retry_after(v, "")) << v;
    EXPECT_FALSE(parse_retry_after("", v)) << v;
  }
  EXPECT_EQ(parse_retry_after("1.5", ""), std::chrono::milliseconds{1500});
}

}  // namespace
}  // namespace chat::providers
