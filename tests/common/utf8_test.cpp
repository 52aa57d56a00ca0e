#include "common/utf8.hpp"

#include <gtest/gtest.h>

namespace chat {
namespace {

TEST(Utf8, LengthCountsCodePointsNotBytes) {
  EXPECT_EQ(utf8_length(""), 0u);
  EXPECT_EQ(utf8_length("abc"), 3u);
  EXPECT_EQ(utf8_length("h\xC3\xA9llo"), 5u);          // é is two bytes
  EXPECT_EQ(utf8_length("\xE2\x82\xAC"), 1u);           // € is three
  EXPECT_EQ(utf8_length("\xF0\x9F\x98\x80!"), 2u);      // an emoji is four
}

TEST(Utf8, PrefixNeverSplitsASequence) {
  EXPECT_EQ(utf8_prefix("h\xC3\xA9llo", 2), "h\xC3\xA9");
  EXPECT_EQ(utf8_prefix("\xF0\x9F\x98\x80\xF0\x9F\x98\x80", 1), "\xF0\x9F\x98\x80");
  EXPECT_EQ(utf8_prefix("abc", 0), "");
  EXPECT_EQ(utf8_prefix("abc", 10), "abc");
}

}  // namespace
}  // namespace chat
