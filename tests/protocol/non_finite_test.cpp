// Boost.JSON reads 1e400 as infinity (and -1e400 as -infinity). A decoder of
// bus messages must refuse such numbers wherever a number is read: encoded
// again they would be "Infinity", which no JSON parser accepts, and as
// integers they would wrap.
#include <gtest/gtest.h>

#include <string>

#include "protocol/messages.hpp"

namespace chat::protocol {
namespace {

const char* kHuge[] = {"1e400", "-1e400", "1.7976931348623159e308", "1e309", "18446744073709551616",
                       "-9223372036854775809", "9.3e18"};

std::string workflow_with_context(const std::string& field, const std::string& number) {
  return R"({"message_id":"m1","session_id":"s1","user_id":"u1","message":"hi","context":{")" + field +
         R"(":)" + number + "}}";
}

// A complete final chunk whose `field` (chunk_id, attempt or tokens_used) is `number`.
std::string chunk_with(const std::string& field, const std::string& number) {
  auto value = [&](const std::string& name, const std::string& fallback) { return name == field ? number : fallback; };
  return R"({"session_id":"s1","message_id":"m1","chunk_id":)" + value("chunk_id", "0") +
         R"(,"attempt":)" + value("attempt", "1") +
         R"(,"chunk":"x","chunk_type":"content","is_final":true,"timestamp":"t",)"
         R"("metadata":{"model":"m","finish_reason":"stop","tokens_used":)" + value("tokens_used", "3") + "}}";
}

TEST(NonFiniteTest, AWorkflowRequestWithAHugeTemperatureIsRefused) {
  for (const char* n : kHuge) {
    std::string error;
    EXPECT_FALSE(decode_workflow_request(workflow_with_context("temperature", n), error)) << n;
    EXPECT_NE(error.find("context.temperature"), std::string::npos) << n << ": " << error;
  }
}

TEST(NonFiniteTest, AWorkflowRequestWithAHugeMaxTokensIsRefused) {
  for (const char* n : kHuge) {
    std::string error;
    EXPECT_FALSE(decode_workflow_request(workflow_with_context("max_tokens", n), error)) << n;
    EXPECT_NE(error.find("context.max_tokens"), std::string::npos) << n << ": " << error;
  }
}

TEST(NonFiniteTest, AChunkWithAHugeNumberAnywhereIsRefused) {
  for (const char* field : {"chunk_id", "attempt", "tokens_used"}) {
    for (const char* n : kHuge) {
      std::string error;
      auto text = chunk_with(field, n);
      EXPECT_FALSE(decode_response_chunk(text, error)) << text;
      EXPECT_NE(error.find(field), std::string::npos) << text << ": " << error;
    }
  }
}

TEST(NonFiniteTest, ANumberWhereTextBelongsIsRefusedNotConverted) {
  std::string error;
  EXPECT_FALSE(decode_cancel_request(R"({"message_id":1e400,"user_id":"u"})", error));
  EXPECT_FALSE(decode_replay_request(R"({"session_id":"s","pod_id":-1e400})", error));
  EXPECT_FALSE(decode_workflow_request(R"({"message_id":"m","session_id":"s","user_id":"u","message":1e400})", error));
}

TEST(NonFiniteTest, FiniteNumbersInRangeStillDecode) {
  std::string error;
  auto r = decode_workflow_request(workflow_with_context("temperature", "1.5e0"), error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->context.temperature, 1.5);
  auto c = decode_response_chunk(chunk_with("tokens_used", "12.0"), error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->metadata->tokens_used, 12);
}

}  // namespace
}  // namespace chat::protocol
