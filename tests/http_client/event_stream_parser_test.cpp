// The SSE parser on its own: line endings, comments, fields, and input split
// at every possible byte.
#include <gtest/gtest.h>

#include "http_client/event_stream_parser.hpp"

namespace chat::http_client {
namespace {

std::vector<StreamEvent> parse_all(std::string_view text, std::size_t piece = 0) {
  EventStreamParser p;
  std::vector<StreamEvent> out;
  if (piece == 0) {
    EXPECT_TRUE(p.feed(text, out));
  } else {
    for (std::size_t i = 0; i < text.size(); i += piece) EXPECT_TRUE(p.feed(text.substr(i, piece), out));
  }
  p.finish(out);
  return out;
}

TEST(EventStreamParser, LfCrlfAndCrLineEndings) {
  for (std::string_view eol : {"\n", "\r\n", "\r"}) {
    std::string text = "event: a" + std::string(eol) + "data: one" + std::string(eol) + std::string(eol) + "data: two" +
                       std::string(eol) + std::string(eol);
    auto events = parse_all(text);
    ASSERT_EQ(events.size(), 2u) << "eol size " << eol.size();
    EXPECT_EQ(events[0].type, "a");
    EXPECT_EQ(events[0].data, "one");
    EXPECT_EQ(events[1].type, "");
    EXPECT_EQ(events[1].data, "two");
  }
}

TEST(EventStreamParser, CommentsMultiLineDataAndFieldSyntax) {
  auto events = parse_all(
      ": keep-alive\n\n"
      "data:no-space\n"
      "data:  two spaces\n"
      "data\n"
      "id: 7\n"
      "retry: 1000\n"
      "unknown: x\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "no-space\n two spaces\n");
  EXPECT_EQ(events[0].id, "7");
}

TEST(EventStreamParser, EventWithoutDataIsNotDispatched) {
  auto events = parse_all("event: ping\n\ndata: x\n\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, "");
  EXPECT_EQ(events[0].data, "x");
}

TEST(EventStreamParser, EverySplitGivesTheSameEvents) {
  std::string text =
      "\xEF\xBB\xBF: comment\r\n\r\nevent: message_start\r\ndata: {\"t\":\"h\xC3\xA9llo \xF0\x9F\x98\x80\"}\r\n\r\n"
      "data: [DONE]\r\n\r\n";
  auto whole = parse_all(text);
  ASSERT_EQ(whole.size(), 2u);
  EXPECT_EQ(whole[0].type, "message_start");
  EXPECT_EQ(whole[0].data, "{\"t\":\"h\xC3\xA9llo \xF0\x9F\x98\x80\"}");
  EXPECT_EQ(whole[1].data, "[DONE]");
  for (std::size_t piece = 1; piece < text.size(); ++piece) {
    auto events = parse_all(text, piece);
    ASSERT_EQ(events.size(), whole.size()) << "piece " << piece;
    for (std::size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].type, whole[i].type) << "piece " << piece;
      EXPECT_EQ(events[i].data, whole[i].data) << "piece " << piece;
    }
  }
}

TEST(EventStreamParser, CrAtTheEndOfAPieceThenLf) {
  EventStreamParser p;
  std::vector<StreamEvent> out;
  p.feed("data: a\r", out);
  p.feed("\n\r", out);
  EXPECT_EQ(out.size(), 1u);  // CRLF is one line end, the next CR the blank line
  p.feed("\ndata: b\n\n", out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].data, "b");
}

TEST(EventStreamParser, UnterminatedLastEventIsFlushedAtTheEnd) {
  EventStreamParser p;
  std::vector<StreamEvent> out;
  p.feed("data: [DONE]", out);
  EXPECT_TRUE(out.empty());
  p.finish(out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "[DONE]");
}

TEST(EventStreamParser, OversizedEventIsRefused) {
  EventStreamParser p(64);
  std::vector<StreamEvent> out;
  EXPECT_FALSE(p.feed("data: " + std::string(100, 'x'), out));
  EXPECT_FALSE(p.feed("\n\n", out));
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace chat::http_client
