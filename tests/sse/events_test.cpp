#include "sse/events.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace chat::sse
