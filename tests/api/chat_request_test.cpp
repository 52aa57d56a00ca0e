#include "api/chat_request.hpp"

#include <gtest/gtest.h>

namespace chat::api {
namespace {

ChatRequestResult parse(std::string_view body, std::size_t max_chars = 32'000) {
  return parse_chat_request(body, ChatLimits{max_chars});
}

void expect_invalid(std::string_view body, std::string_view code, std::string_view mentions) {
  auto r = parse(body);
  ASSERT_TRUE(r.error) << body;
  EXPECT_FALSE(r.request);
  EXPECT_EQ(r.error->code, code) << body;
  EXPECT_NE(r.error->message.find(mentions), std::string::npos) << r.error->message;
}

TEST(ChatRequestTest, AFullRequestIsRead) {
  auto r = parse(R"({"session_id":"sess_123","user_id":"user_456","message":"Hello, AI!","ai_provider":"openai",
                   "model":"gpt-4o-mini","context":{"temperature":0.7,"max_tokens":2000,"system_prompt":"be nice"}})");
  ASSERT_TRUE(r.request) << r.error->message;
  EXPECT_EQ(r.request->session_id, "sess_123");
  EXPECT_EQ(r.request->user_id, "user_456");
  EXPECT_EQ(r.request->message, "Hello, AI!");
  EXPECT_EQ(r.request->ai_provider, "openai");
  EXPECT_EQ(r.request->model, "gpt-4o-mini");
  EXPECT_DOUBLE_EQ(*r.request->temperature, 0.7);
  EXPECT_EQ(*r.request->max_tokens, 2000);
  EXPECT_EQ(r.request->system_prompt, "be nice");
}

TEST(ChatRequestTest, MalformedBodiesAreInvalidJson) {
  expect_invalid("{", "invalid_json", "JSON");
  expect_invalid("", "invalid_json", "JSON");
  expect_invalid("[]", "invalid_json", "object");
  expect_invalid("\"text\"", "invalid_json", "object");
  expect_invalid("{\"message\":\"\xff\"}", "invalid_json", "JSON");
}

TEST(ChatRequestTest, MissingAndEmptyFieldsAreNamed) {
  expect_invalid(R"({"user_id":"u","message":"m"})", "invalid_request", "session_id is required");
  expect_invalid(R"({"session_id":"","user_id":"u","message":"m"})", "invalid_request", "session_id is required");
  expect_invalid(R"({"session_id":"s","message":"m"})", "invalid_request", "user_id is required");
  expect_invalid(R"({"session_id":"s","user_id":"u"})", "invalid_request", "message is required");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":""})", "invalid_request", "message is required");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":" \n\t "})", "invalid_request", "empty");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"\u3000\u00a0\u200b\u2028"})", "invalid_request", "empty");
}

TEST(ChatRequestTest, WrongTypesAreNamed) {
  expect_invalid(R"({"session_id":1,"user_id":"u","message":"m"})", "invalid_request", "session_id must be a string");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":5})", "invalid_request", "message must be a string");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"m","context":[]})", "invalid_request", "context");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"m","context":{"temperature":"hot"}})", "invalid_request",
                 "temperature");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"m","context":{"temperature":3}})", "invalid_request",
                 "temperature");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"m","context":{"max_tokens":0}})", "invalid_request",
                 "max_tokens");
}

TEST(ChatRequestTest, IdentifiersOutsideTheCharsetAreRejected) {
  for (std::string bad : std::vector<std::string>{"a.b", "a*", "a>", "a:b", "a b", "a\\u0001", "caf\\u00e9", "a/b", std::string(129, 'x')}) {
    expect_invalid(R"({"session_id":")" + bad + R"(","user_id":"u","message":"m"})", "invalid_request", "session_id");
    expect_invalid(R"({"session_id":"s","user_id":")" + bad + R"(","message":"m"})", "invalid_request", "user_id");
  }
  EXPECT_TRUE(parse(R"({"session_id":")" + std::string(128, 'x') + R"(","user_id":"A-z_0","message":"m"})").request);
}

TEST(ChatRequestTest, TheMessageLimitCountsCharactersNotBytes) {
  std::string four_chars = "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";  // four "é", eight bytes
  EXPECT_TRUE(parse_chat_request(R"({"session_id":"s","user_id":"u","message":")" + four_chars + "\"}", {4}).request);
  auto r = parse_chat_request(R"({"session_id":"s","user_id":"u","message":")" + four_chars + "e\"}", {4});
  ASSERT_TRUE(r.error);
  EXPECT_NE(r.error->message.find("longer than 4"), std::string::npos);
}

TEST(ChatRequestTest, ProviderAndModelNamesAreChecked) {
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"m","ai_provider":"open.ai"})", "invalid_request", "ai_provider");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"m","model":"gpt 4"})", "invalid_request", "model");
  EXPECT_TRUE(parse(R"({"session_id":"s","user_id":"u","message":"m","model":"llama3.1:8b"})").request);
}

TEST(ChatRequestTest, ContentTypes) {
  EXPECT_TRUE(is_json_content_type("application/json"));
  EXPECT_TRUE(is_json_content_type("application/json; charset=utf-8"));
  EXPECT_TRUE(is_json_content_type("Application/JSON"));
  EXPECT_FALSE(is_json_content_type("text/plain"));
  EXPECT_FALSE(is_json_content_type(""));
  EXPECT_FALSE(is_json_content_type("application/jsonx"));
  EXPECT_FALSE(is_json_content_type("application/x-www-form-urlencoded"));
}

}  // namespace
}  // namespace chat::api

namespace chat::api {
namespace {

// Boost.JSON reads 1e400 as infinity: refused like any out-of-range number,
// never stored or passed to a worker as "Infinity".
TEST(ChatRequestTest, NonFiniteNumbersAreRefused) {
  for (const char* n : {"1e400", "-1e400", "1e309", "-1e309"}) {
    expect_invalid(std::string(R"({"session_id":"s","user_id":"u","message":"m","context":{"temperature":)") + n + "}}",
                   "invalid_request", "temperature");
    expect_invalid(std::string(R"({"session_id":"s","user_id":"u","message":"m","context":{"max_tokens":)") + n + "}}",
                   "invalid_request", "max_tokens");
  }
  for (const char* text : {"NaN", "Infinity", "-Infinity", "nan", "inf"}) {
    expect_invalid(std::string(R"({"session_id":"s","user_id":"u","message":"m","context":{"temperature":)") + text + "}}",
                   "invalid_json", "");
  }
}

TEST(ChatRequestTest, NulIsRefusedInMessageAndSystemPrompt) {
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"a\u0000b"})", "invalid_request", "NUL");
  expect_invalid(R"({"session_id":"s","user_id":"u","message":"m","context":{"system_prompt":"\u0000"}})",
                 "invalid_request", "NUL");
}

}  // namespace
}  // namespace chat::api
