#include "sse/resume_cursor.hpp"

#include <gtest/gtest.h>

namespace chat::sse {
namespace {

TEST(ResumeCursor, EventIdsRoundTrip) {
  EXPECT_EQ(event_id("msg_1", 7), "msg_1:7");
  EXPECT_EQ(parse_last_event_id(event_id("msg_1", 7)), (ResumeCursor{"msg_1", 7}));
}

TEST(ResumeCursor, AnythingElseIsNoCursor) {
  EXPECT_FALSE(parse_last_event_id("msg_1"));
  EXPECT_FALSE(parse_last_event_id("msg_1:"));
  EXPECT_FALSE(parse_last_event_id("msg_1:x"));
  EXPECT_FALSE(parse_last_event_id("msg_1:-1"));
  EXPECT_FALSE(parse_last_event_id("msg_1:99999999999"));
  EXPECT_FALSE(parse_last_event_id("bad.id:3"));
  EXPECT_FALSE(parse_last_event_id(":3"));
  EXPECT_FALSE(parse_last_event_id(""));
}

}  // namespace
}  // namespace chat::sse
