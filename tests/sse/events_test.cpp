#include "sse/events.hpp"

#include <gtest/gtest.h>

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

namespace chat::sse {
namespace {

// The JSON of a frame's single data line.
boost::json::object data_of(const Frame& f) {
  auto pos = f->find("data: ");
  EXPECT_NE(pos, std::string::npos);
  auto end = f->find('\n', pos);
  return boost::json::parse(f->substr(pos + 6, end - pos - 6)).as_object();
}

protocol::ResponseChunk chunk(std::uint32_t id, std::string text, std::string message_id = "m1") {
  protocol::ResponseChunk c;
  c.session_id = "s1";
  c.message_id = std::move(message_id);
  c.chunk_id = id;
  c.chunk = std::move(text);
  c.timestamp = "2026-11-30T00:00:0" + std::to_string(id % 10) + "Z";
  return c;
}

TEST(SseEventsTest, TwoConsecutiveChunksMergeIntoTheLatersEventWithBothTexts) {
  auto first = chunk_frame(chunk(3, "Hello, \"wor"));
  auto second = chunk_frame(chunk(4, "ld\"\n"));
  auto merged = merge_chunk_frames(*first, *second);
  ASSERT_TRUE(merged);
  EXPECT_EQ(merged->rfind("id: m1:4\nevent: chunk\ndata: {", 0), 0u) << *merged;
  auto data = data_of(merged);
  EXPECT_EQ(data.at("chunk").as_string(), "Hello, \"world\"\n");
  EXPECT_EQ(data.at("chunk_id").as_int64(), 4);
  EXPECT_EQ(data.at("timestamp"), data_of(second).at("timestamp"));
  EXPECT_EQ(merged->origin, first->origin) << "delivery is timed from the oldest text it carries";
  // A merged event merges on with the next chunk.
  auto third = merge_chunk_frames(*merged, *chunk_frame(chunk(5, "!")));
  ASSERT_TRUE(third);
  EXPECT_EQ(data_of(third).at("chunk").as_string(), "Hello, \"world\"\n!");
  EXPECT_EQ(third->last_chunk_id, 5u);
}

TEST(SseEventsTest, OnlyDirectlyFollowingContentChunksOfOneReplyAttemptMerge) {
  auto c3 = chunk_frame(chunk(3, "a"));
  EXPECT_FALSE(merge_chunk_frames(*c3, *chunk_frame(chunk(5, "b")))) << "a gap";
  EXPECT_FALSE(merge_chunk_frames(*c3, *chunk_frame(chunk(3, "b")))) << "a repeat";
  EXPECT_FALSE(merge_chunk_frames(*c3, *chunk_frame(chunk(4, "b", "m2")))) << "another reply";
  auto retry = chunk(4, "b");
  retry.attempt = 2;
  EXPECT_FALSE(merge_chunk_frames(*c3, *chunk_frame(retry))) << "another attempt";
  auto final = chunk(4, "");
  final.is_final = true;
  final.chunk_type = protocol::ChunkType::metadata;
  final.metadata = protocol::ChunkMetadata{"demo", 3, "stop"};
  EXPECT_FALSE(merge_chunk_frames(*c3, *chunk_frame(final))) << "the final chunk keeps its own event";
  EXPECT_FALSE(merge_chunk_frames(*c3, *ping_frame(1))) << "not a chunk";
  EXPECT_FALSE(merge_chunk_frames(*ping_frame(1), *c3));
}

TEST(SseEventsTest, AChunkFrameHasIdEventAndOneDataLine) {
  protocol::ResponseChunk c;
  c.session_id = "s1";
  c.message_id = "m1";
  c.chunk_id = 4;
  c.chunk = "line one\nline two";  // newlines inside the text stay escaped in the JSON
  auto f = chunk_frame(c);
  EXPECT_EQ(f->rfind("id: m1:4\nevent: chunk\ndata: {", 0), 0u) << *f;
  EXPECT_TRUE(f->ends_with("}\n\n"));
  EXPECT_EQ(std::count(f->begin(), f->end(), '\n'), 4);
  EXPECT_EQ(data_of(f).at("chunk").as_string(), "line one\nline two");
}

TEST(SseEventsTest, LifecycleFramesCarryTheirFields) {
  auto connected = connected_frame("conn_1", "s1", "pod-1");
  EXPECT_EQ(connected->rfind("event: connected\n", 0), 0u);
  EXPECT_EQ(data_of(connected).at("connection_id").as_string(), "conn_1");
  EXPECT_EQ(data_of(connected).at("pod_id").as_string(), "pod-1");

  auto done = complete_frame("m1", 42, "stop", "complete");
  EXPECT_EQ(done->rfind("event: message_complete\n", 0), 0u);
  EXPECT_EQ(data_of(done).at("token_count").as_int64(), 42);
  EXPECT_EQ(data_of(done).at("finish_reason").as_string(), "stop");
  EXPECT_EQ(data_of(done).at("status").as_string(), "complete");

  auto err = error_frame("m1", "chunks_missing", "gone", {3, 4});
  EXPECT_EQ(data_of(err).at("code").as_string(), "chunks_missing");
  EXPECT_EQ(data_of(err).at("chunk_ids").as_array().size(), 2u);

  EXPECT_EQ(*ping_frame(1700000000), "event: ping\ndata: {\"timestamp\":1700000000}\n\n");
  EXPECT_EQ(*retry_frame(std::chrono::milliseconds{3000}), "retry: 3000\n\n");
  EXPECT_EQ(data_of(reset_frame("s1", "why")).at("reason").as_string(), "why");
}

TEST(SseEventsTest, TheStreamHeadDisablesBufferingAndCaching) {
  auto head = stream_head("*");
  EXPECT_NE(head.find("Content-Type: text/event-stream\r\n"), std::string::npos);
  EXPECT_NE(head.find("Cache-Control: no-cache\r\n"), std::string::npos);
  EXPECT_NE(head.find("X-Accel-Buffering: no\r\n"), std::string::npos);
  EXPECT_NE(head.find("Access-Control-Allow-Origin: *\r\n"), std::string::npos);
  EXPECT_TRUE(head.ends_with("\r\n\r\n"));
  EXPECT_EQ(stream_head("").find("Access-Control"), std::string::npos);
  EXPECT_EQ(head.find("Vary:"), std::string::npos);
  auto echoed = stream_head("https://app.example.com");
  EXPECT_NE(echoed.find("Access-Control-Allow-Origin: https://app.example.com\r\nVary: Origin\r\n"), std::string::npos);
}

TEST(SseEventsTest, TheDrainingAnswerIsAWhole503WithItsJsonError) {
  const auto answer = unavailable_answer("https://app.example.com");
  boost::beast::http::response_parser<boost::beast::http::string_body> parser;
  parser.eager(true);
  boost::beast::error_code ec;
  auto used = parser.put(boost::asio::buffer(answer), ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(parser.is_done()) << "the body is as long as Content-Length says";
  EXPECT_EQ(used, answer.size());
  const auto& res = parser.get();
  EXPECT_EQ(res.result_int(), 503);
  EXPECT_EQ(res[boost::beast::http::field::retry_after], "2");
  EXPECT_EQ(res[boost::beast::http::field::content_type], "application/json");
  EXPECT_EQ(res[boost::beast::http::field::access_control_allow_origin], "https://app.example.com");
  EXPECT_FALSE(res.keep_alive());
  auto error = boost::json::parse(res.body()).at("error");
  EXPECT_EQ(error.at("code").as_string(), "unavailable");
  EXPECT_EQ(unavailable_answer("").find("Access-Control"), std::string::npos);
}

}  // namespace
}  // namespace chat::sse
