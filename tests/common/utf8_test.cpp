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

TEST(Utf8, BlankMeansNothingVisible) {
  EXPECT_TRUE(utf8_is_blank(""));
  EXPECT_TRUE(utf8_is_blank(" \t\r\n\v\f"));
  EXPECT_TRUE(utf8_is_blank("\xC2\xA0"));                   // no-break space
  EXPECT_TRUE(utf8_is_blank("\xE3\x80\x80"));              // ideographic space
  EXPECT_TRUE(utf8_is_blank("\xE2\x80\xA8\xE2\x80\xA9"));  // line and paragraph separators
  EXPECT_TRUE(utf8_is_blank("\xE2\x80\x8B \xEF\xBB\xBF"));  // zero-width space, BOM
  EXPECT_FALSE(utf8_is_blank(" a "));
  EXPECT_FALSE(utf8_is_blank("\xC2\xA0\xC3\xA9"));            // é after a no-break space
  EXPECT_FALSE(utf8_is_blank("\xF0\x9F\x98\x80"));            // an emoji
  EXPECT_FALSE(utf8_is_blank("\xE3\x80"));                      // a cut sequence shows as U+FFFD
}

}  // namespace
}  // namespace chat
