// The size cap of a history page (CHAT_HISTORY_MAX_BYTES, docs/API.md §3.4).
#include "api/history_json.hpp"

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

namespace chat::api {
namespace {

store::MessagePage page_of(std::size_t count, std::size_t content_bytes, std::optional<std::string> next = {}) {
  store::MessagePage page;
  for (std::size_t i = 0; i < count; ++i) {
    store::StoredMessage m;
    m.message_id = "msg_" + std::to_string(i);  // oldest first
    m.session_id = "s1";
    m.role = i % 2 ? "assistant" : "user";
    m.content = std::string(content_bytes, 'x');
    m.status = "complete";
    m.metadata_json = "{}";
    page.messages.push_back(std::move(m));
  }
  page.next_before = std::move(next);
  return page;
}

TEST(HistoryPageTest, ASmallPageIsWhole) {
  auto body = message_page_json(page_of(3, 10, "msg_older"), 1024 * 1024);
  EXPECT_EQ(body.at("messages").as_array().size(), 3u);
  EXPECT_EQ(body.at("next_before"), "msg_older");
  EXPECT_TRUE(message_page_json(page_of(3, 10), 1024 * 1024).at("next_before").is_null());
}

TEST(HistoryPageTest, ALargePageKeepsItsNewestMessagesWithinTheCap) {
  // 200 messages of 32,000 bytes: 6.4 MB uncut.
  auto body = message_page_json(page_of(200, 32'000), 1024 * 1024);
  auto size = boost::json::serialize(body).size();
  EXPECT_LE(size, 1024u * 1024u + 256u);
  const auto& messages = body.at("messages").as_array();
  ASSERT_EQ(messages.size(), 32u);  // 32 x ~32.2 KB fit in 1 MiB
  EXPECT_EQ(messages.back().at("message_id"), "msg_199");  // the newest is last, as without the cap
  EXPECT_EQ(messages.front().at("message_id"), "msg_168");
  // The older ones come with the next page, through the usual cursor.
  EXPECT_EQ(body.at("next_before"), "msg_168");
}

TEST(HistoryPageTest, TheNewestMessageIsKeptEvenAlone) {
  auto body = message_page_json(page_of(5, 100'000), 4096);
  ASSERT_EQ(body.at("messages").as_array().size(), 1u);
  EXPECT_EQ(body.at("messages").as_array()[0].at("message_id"), "msg_4");
  EXPECT_EQ(body.at("next_before"), "msg_4");
}

TEST(HistoryPageTest, EscapedContentCountsAsWritten) {
  // Control characters are written as \u00XX: six bytes each.
  auto page = page_of(10, 0);
  for (auto& m : page.messages) m.content = std::string(10'000, '\x01');
  auto body = message_page_json(page, 128 * 1024);
  EXPECT_LE(boost::json::serialize(body).size(), 128u * 1024u + 256u);
  EXPECT_EQ(body.at("messages").as_array().size(), 2u);
}

TEST(SessionCursorTest, ACursorComesBackAsItWasGiven) {
  store::SessionCursor cursor{SystemTime{std::chrono::microseconds{1'764'612'345'123'456}}, "sess_a-1"};
  EXPECT_EQ(to_text(cursor), "1764612345123456.sess_a-1");
  auto parsed = parse_session_cursor(to_text(cursor));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->last_message_at, cursor.last_message_at);
  EXPECT_EQ(parsed->session_id, cursor.session_id);
}

TEST(SessionCursorTest, AnythingElseIsNoCursor) {
  for (const char* bad : {"", ".", "12", "12.", ".s", "-1.s", "+1.s", "1e3.s", "12.a b", "12.s.t", "99999999999999999999.s", "9999999999999999.s",
                          " 12.s", "12.s "})
    EXPECT_FALSE(parse_session_cursor(bad)) << bad;
}

}  // namespace
}  // namespace chat::api
