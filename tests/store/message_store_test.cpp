// The pieces of the store interface that need no database: titles and errors.

#include "store/message_store.hpp"

#include <gtest/gtest.h>

namespace chat::store {
namespace {

TEST(MakeTitle, ShortMessageIsItsOwnTitle) { EXPECT_EQ(make_title("Hello, AI!"), "Hello, AI!"); }

TEST(MakeTitle, WhitespaceAndNewlinesCollapse) {
  EXPECT_EQ(make_title("  Plan a\ttrip\n\nto   Lisbon  "), "Plan a trip to Lisbon");
}

TEST(MakeTitle, LongMessageIsCutAtAWordWithAnEllipsis) {
  std::string text = "Please explain in detail how the TCP three way handshake works and why it needs three steps";
  auto title = make_title(text);
  EXPECT_EQ(title, "Please explain in detail how the TCP three way handshake\u2026");
  EXPECT_LE(title.size(), 60u + 3u);
}

TEST(MakeTitle, OneGiantWordIsCutAtSixtyCharacters) {
  std::string word(100, 'x');
  EXPECT_EQ(make_title(word), std::string(60, 'x') + "\u2026");
}

TEST(MakeTitle, CountsCharactersNotBytesAndNeverSplitsOne) {
  std::string word;
  for (int i = 0; i < 70; ++i) word += "\u00e9";  // two bytes each
  auto title = make_title(word);
  std::string expected;
  for (int i = 0; i < 60; ++i) expected += "\u00e9";
  EXPECT_EQ(title, expected + "\u2026");
}

TEST(MakeTitle, BlankMessageGetsAPlaceholder) {
  EXPECT_EQ(make_title(""), "New chat");
  EXPECT_EQ(make_title(" \n\t "), "New chat");
}

TEST(StoreErrors, AreErrorCodesOfTheStoreCategory) {
  boost::system::error_code ec = Errc::forbidden;
  EXPECT_EQ(ec.category().name(), std::string("chat.store"));
  EXPECT_EQ(ec, Errc::forbidden);
  EXPECT_NE(ec, Errc::not_found);
  EXPECT_FALSE(make_error_code(Errc::unavailable).message().empty());
  EXPECT_FALSE(make_error_code(Errc::overloaded).message().empty());
}

}  // namespace
}  // namespace chat::store
