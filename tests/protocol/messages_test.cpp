#include "protocol/messages.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "common/time.hpp"

namespace chat::protocol {
namespace {

WorkflowRequest sample_request() {
  WorkflowRequest r;
  r.message_id = "msg_1";
  r.session_id = "sess_1";
  r.user_id = "user_1";
  r.message = "Hello, \"AI\" ✓\nsecond line";
  r.context.ai_provider = "openai";
  r.context.model = "gpt-4o-mini";
  r.context.temperature = 0.5;
  r.context.max_tokens = 200;
  r.context.system_prompt = "be brief";
  r.context.conversation_history = {{"user", "hi"}, {"assistant", "hello"}};
  r.timestamp = "2026-11-26T12:00:00Z";
  r.correlation_id = "corr_1";
  return r;
}

TEST(MessagesTest, WorkflowRequestRoundTrips) {
  auto r = sample_request();
  std::string error;
  auto back = decode_workflow_request(encode(r), error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, r);
}

TEST(MessagesTest, ResponseChunkRoundTripsWithEveryField) {
  ResponseChunk c;
  c.session_id = "s";
  c.message_id = "m";
  c.chunk_id = 7;
  c.chunk = "text ✓";
  c.chunk_type = ChunkType::error;
  c.is_final = true;
  c.metadata = ChunkMetadata{"demo-1", 12, "error"};
  c.error = ChunkError{"provider_error", "boom"};
  c.timestamp = "2026-11-26T12:00:00.000001Z";
  c.correlation_id = "corr";
  std::string error;
  auto back = decode_response_chunk(encode(c), error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, c);
}

TEST(MessagesTest, EncodedChunksCarryEveryContractField) {
  ResponseChunk c;
  c.session_id = "s";
  c.message_id = "m";
  c.timestamp = "2026-11-26T12:00:00.000001Z";
  auto v = boost::json::parse(encode(c)).as_object();
  for (const char* key : {"session_id", "message_id", "chunk_id", "chunk", "chunk_type", "is_final", "timestamp"})
    EXPECT_TRUE(v.contains(key)) << key;
  EXPECT_EQ(v.at("chunk_type").as_string(), "content");
}

TEST(MessagesTest, AChunkThatCameWithoutATimestampIsStampedWhenRead) {
  std::string error;
  auto c = decode_response_chunk(R"({"session_id":"s","message_id":"m","chunk_id":0,"chunk":"Hi","is_final":false})",
                                 error);
  ASSERT_TRUE(c) << error;
  auto stamp = boost::json::parse(encode(*c)).as_object().at("timestamp").as_string();
  EXPECT_TRUE(parse_rfc3339(std::string(stamp))) << encode(*c);
}

TEST(MessagesTest, AChunkWhoseTimestampIsNotRfc3339IsStampedWhenReadAndEncodedAgain) {
  for (const char* bad : {"t", "yesterday", "2026-11-26 12:00:00", "2026-11-26T12:00:00", "1795967433"}) {
    std::string error;
    const std::string text = std::string(R"({"session_id":"s","message_id":"m","chunk_id":1,"chunk":"Hi",)") +
                             R"("chunk_type":"content","is_final":false,"timestamp":")" + bad + R"("})";
    auto c = decode_response_chunk(text, error);
    ASSERT_TRUE(c) << error;
    EXPECT_TRUE(parse_rfc3339(c->timestamp)) << bad << " became " << c->timestamp;
    EXPECT_TRUE(c->wire.empty()) << bad << ": forwarded as it came";
  }
  // One with an offset is RFC 3339 and goes as it came.
  std::string error;
  auto c = decode_response_chunk(
      R"({"session_id":"s","message_id":"m","chunk_id":1,"chunk":"Hi","chunk_type":"content","is_final":false,"timestamp":"2026-11-26T13:00:00.5+01:00"})",
      error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->timestamp, "2026-11-26T13:00:00.5+01:00");
  EXPECT_FALSE(c->wire.empty());
}

TEST(MessagesTest, AChunksErrorIsBoundedAndItsCodeAnIdentifier) {
  std::string error;
  const std::string message = std::string(2'047, 'x') + "\u00e9tail";  // a 2-byte character across the bound
  auto c = decode_response_chunk(R"({"session_id":"s","message_id":"m","chunk_id":0,"chunk_type":"error","is_final":true,)"
                                 R"("error":{"code":"<b>bad code</b>","message":")" + message + R"("}})",
                                 error);
  ASSERT_TRUE(c) << error;
  ASSERT_TRUE(c->error);
  EXPECT_EQ(c->error->code, "provider_error");
  EXPECT_EQ(c->error->message, std::string(2'047, 'x')) << "cut before the character it would split";
  c = decode_response_chunk(
      R"({"session_id":"s","message_id":"m","chunk_id":0,"chunk_type":"error","is_final":true,"error":{"code":"rate_limited","message":"slow down"}})",
      error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->error->code, "rate_limited");
  EXPECT_EQ(c->error->message, "slow down");
}

TEST(MessagesTest, TokensUsedIsAnIntegerABrowserCanHold) {
  std::string error;
  auto with_tokens = [](const char* n) {
    return std::string(R"({"session_id":"s","message_id":"m","chunk_id":0,"is_final":true,"metadata":{"tokens_used":)") +
           n + "}}";
  };
  auto c = decode_response_chunk(with_tokens("9007199254740991"), error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->metadata->tokens_used, 9007199254740991);
  EXPECT_FALSE(decode_response_chunk(with_tokens("9007199254740992"), error));
  EXPECT_NE(error.find("tokens_used"), std::string::npos) << error;
}

TEST(MessagesTest, ARequestWithoutProviderOrModelLeavesThemOutForTheWorkersDefault) {
  auto r = sample_request();
  r.context.ai_provider.clear();
  r.context.model.clear();
  auto context = boost::json::parse(encode(r)).as_object().at("context").as_object();
  EXPECT_FALSE(context.contains("ai_provider"));
  EXPECT_FALSE(context.contains("model"));
  std::string error;
  auto back = decode_workflow_request(encode(r), error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, r);
}

TEST(MessagesTest, CancelRequestRoundTrips) {
  CancelRequest c{"m1", "s1", "u1"};
  std::string error;
  auto back = decode_cancel_request(encode(c), error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, c);
}

TEST(MessagesTest, ACancelIsTakenOnlyOnItsOwnMessagesSubject) {
  auto payload = encode(CancelRequest{"m1", "s1", "u1"});
  std::string error;
  EXPECT_TRUE(decode_cancel_on("chat.workflow.cancel.m1", payload, error)) << error;
  EXPECT_FALSE(decode_cancel_on("chat.workflow.cancel.m2", payload, error));
  EXPECT_EQ(error, "message_id m1 is not the subject's message");
  EXPECT_FALSE(decode_cancel_on("chat.workflow.cancel.m1", "{}", error));
  EXPECT_FALSE(error.empty());
}

TEST(MessagesTest, ASessionDeletionIsTakenOnlyOnItsOwnSessionsSubject) {
  SessionDeleted d{"s1", "u1", "pod-1"};
  std::string error;
  auto back = decode_session_deleted_on("chat.session.s1.deleted", encode(d), error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, d);
  EXPECT_FALSE(decode_session_deleted_on("chat.session.s2.deleted", encode(d), error));
  EXPECT_EQ(error, "session_id s1 is not the subject's session");
  EXPECT_FALSE(decode_session_deleted_on("chat.session.s1.deleted", R"({"session_id":"s1","user_id":"u1"})", error));
  EXPECT_FALSE(error.empty());
  EXPECT_FALSE(decode_session_deleted_on("chat.session.s 1.deleted",
                                         R"({"session_id":"s 1","user_id":"u1","pod_id":"p"})", error));
}

TEST(MessagesTest, ReplayRequestRoundTripsAndIsValidated) {
  ReplayRequest r{"s1", "pod-1", "msg_1"};
  std::string error;
  auto back = decode_replay_request(encode(r), error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, r);
  EXPECT_FALSE(decode_replay_request(R"({"session_id":"s1","pod_id":"pod.1"})", error));
  EXPECT_NE(error.find("pod_id"), std::string::npos);
  auto whole_session = decode_replay_request(R"({"session_id":"s1","pod_id":"p"})", error);
  ASSERT_TRUE(whole_session) << error;
  EXPECT_TRUE(whole_session->message_id.empty());
  EXPECT_FALSE(decode_replay_request(R"({"session_id":"s1","pod_id":"p","message_id":"a:b"})", error));
}

TEST(MessagesTest, AChunkFromAnotherLanguageWithOnlyTheBasicsIsAccepted) {
  std::string error;
  auto c = decode_response_chunk(R"({"session_id":"s1","message_id":"m1","chunk_id":0,"chunk":"Hi","is_final":false})", error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->chunk_type, ChunkType::content);
  EXPECT_EQ(c->chunk, "Hi");
}

void expect_rejected(std::string_view json, std::string_view mentions) {
  std::string error;
  EXPECT_FALSE(decode_response_chunk(json, error)) << json;
  EXPECT_NE(error.find(mentions), std::string::npos) << error;
}

TEST(MessagesTest, BadChunksAreRejectedWithTheReason) {
  expect_rejected("not json", "malformed");
  expect_rejected("[1]", "object");
  expect_rejected(R"({"message_id":"m","chunk_id":0})", "session_id");
  expect_rejected(R"({"session_id":"a.b","message_id":"m","chunk_id":0})", "session_id");
  expect_rejected(R"({"session_id":"s","message_id":"m*","chunk_id":0})", "message_id");
  expect_rejected(R"({"session_id":"s","message_id":"m"})", "chunk_id");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":-1})", "chunk_id");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":1.5})", "chunk_id");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":99999999999})", "chunk_id");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":0,"chunk":5})", "chunk");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":0,"is_final":"yes"})", "is_final");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":0,"chunk_type":"video"})", "chunk_type");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":0,"metadata":{"tokens_used":"x"}})", "tokens_used");
  // PostgreSQL refuses NUL in text: a chunk carrying one would be streamed and then never stored.
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":0,"chunk":"a\u0000b"})", "NUL");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":0,"error":{"code":"x","message":"\u0000"}})", "NUL");
  expect_rejected(R"({"session_id":"s","message_id":"m","chunk_id":0,"is_final":true,"metadata":{"finish_reason":"bogus"}})",
                  "finish_reason");
}

TEST(MessagesTest, OnlyAPlainChunkWithEveryFieldIsForwardedAsItCame) {
  std::string error;
  const std::string plain =
      R"({"session_id":"s","message_id":"m","chunk_id":1,"chunk":"Hi","chunk_type":"content","is_final":false,"timestamp":"2026-11-26T12:00:00Z"})";
  auto c = decode_response_chunk(plain, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->wire, plain);
  // A null is no value: a client would read it as the wrong type.
  c = decode_response_chunk(
      R"({"session_id":"s","message_id":"m","chunk_id":1,"chunk":"Hi","chunk_type":null,"is_final":null,"timestamp":"2026-11-26T12:00:00Z"})",
      error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(c->wire.empty());
  // Nor with a field the contract does not name (it would go to every stream, and be held in memory).
  c = decode_response_chunk(
      R"({"session_id":"s","message_id":"m","chunk_id":1,"chunk":"Hi","chunk_type":"content","is_final":false,"timestamp":"2026-11-26T12:00:00Z","pad":"xxxx"})",
      error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(c->wire.empty());
  // The final chunk is encoded again from its checked values.
  c = decode_response_chunk(
      R"({"session_id":"s","message_id":"m","chunk_id":2,"chunk":"","chunk_type":"metadata","is_final":true,"timestamp":"2026-11-26T12:00:00Z","metadata":{"model":"x","finish_reason":"stop","extra":{"a":1}}})",
      error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(c->wire.empty());
}

TEST(MessagesTest, BadWorkflowRequestsAreRejected) {
  std::string error;
  EXPECT_FALSE(decode_workflow_request(R"({"message_id":"m","session_id":"s","user_id":"u"})", error));
  EXPECT_NE(error.find("message"), std::string::npos);
  EXPECT_FALSE(decode_workflow_request(
      R"({"message_id":"m","session_id":"s","user_id":"u","message":"x","context":{"conversation_history":[{"role":"robot","content":"x"}]}})",
      error));
  EXPECT_NE(error.find("role"), std::string::npos);
  EXPECT_FALSE(decode_workflow_request(R"({"message_id":"m","session_id":"s>","user_id":"u","message":"x"})", error));
}

}  // namespace
}  // namespace chat::protocol
