#include "common/time.hpp"

#include <gtest/gtest.h>

namespace chat {
namespace {

TEST(TimeTest, Rfc3339RoundTripsWithMicroseconds) {
  auto t = SystemTime{std::chrono::microseconds{1'764'158'400'123'456}};
  auto text = to_rfc3339(t);
  EXPECT_EQ(text, "2025-11-26T12:00:00.123456Z");
  EXPECT_EQ(parse_rfc3339(text), t);
}

TEST(TimeTest, OffsetsAndPlainSecondsParse) {
  EXPECT_EQ(parse_rfc3339("2025-11-26T13:00:00+01:00"), parse_rfc3339("2025-11-26T12:00:00Z"));
  EXPECT_EQ(unix_seconds(*parse_rfc3339("1970-01-01T00:00:10Z")), 10);
}

TEST(TimeTest, GarbageIsRejected) {
  for (std::string_view bad : {"", "yesterday", "2025-11-26", "2025-11-26T12:00:00", "2025-13-26T12:00:00Z",
                               "2025-11-26T12:00:00.Z", "2025-11-26T12:00:00Zjunk"})
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
}

}  // namespace
}  // namespace chat
