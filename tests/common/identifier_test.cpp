#include "common/identifier.hpp"

#include <gtest/gtest.h>

#include <set>

namespace chat {
namespace {

TEST(IdentifierTest, TheSpecCharsetAndLength) {
  EXPECT_TRUE(is_valid_identifier("sess_123"));
  EXPECT_TRUE(is_valid_identifier("A-z_09"));
  EXPECT_TRUE(is_valid_identifier(std::string(128, 'a')));
  EXPECT_FALSE(is_valid_identifier(std::string(129, 'a')));
  EXPECT_FALSE(is_valid_identifier(""));
  for (std::string_view bad : {std::string_view("a.b"), std::string_view("a*"), std::string_view(">"), std::string_view("a:b"), std::string_view("a b"), std::string_view("a\n"), std::string_view("a\0b", 3), std::string_view("é"), std::string_view("a/b"), std::string_view("a\\b")})
    EXPECT_FALSE(is_valid_identifier(bad)) << bad;
}

TEST(IdentifierTest, NewIdentifiersAreValidAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = new_identifier("msg_");
    EXPECT_TRUE(is_valid_identifier(id));
    EXPECT_EQ(id.rfind("msg_", 0), 0u);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(IdentifierTest, CompactIdentifiersAreValidDistinctAndFitInline) {
  std::set<std::string> seen;
  for (int i = 0; i < 100'000; ++i) {
    auto id = CompactId::random().spelled("conn_");
    ASSERT_TRUE(is_valid_identifier(id)) << id;
    ASSERT_EQ(id.size(), 15u);
    ASSERT_EQ(id.rfind("conn_", 0), 0u);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 100'000u);
  // Short enough for the small-string buffer: no heap block per copy.
  EXPECT_LE(CompactId::random().spelled("conn_").size(), std::string().capacity());
}

TEST(IdentifierTest, ACompactIdSpellsItsNumberOneToOne) {
  EXPECT_EQ(CompactId(0).spelled("c_"), "c_0000000000");
  EXPECT_EQ(CompactId(61).spelled(""), "z000000000");
  EXPECT_EQ(CompactId(62).spelled(""), "0100000000");
  EXPECT_EQ(CompactId(CompactId::kSpace - 1).spelled(""), "zzzzzzzzzz");
  EXPECT_EQ(CompactId(CompactId::kSpace).spelled(""), CompactId(0).spelled(""));  // beyond ten characters: wraps
  EXPECT_NE(CompactId(1).spelled(""), CompactId(CompactId::kSpace - 1).spelled(""));
}

}  // namespace
}  // namespace chat
