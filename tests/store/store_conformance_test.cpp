// The MessageStore contract, run against every implementation (see
// store_conformance.hpp; the backends instantiate it in their own test files).

#include "store/store_conformance.hpp"

#include <boost/json/parse.hpp>

#include <atomic>
#include <barrier>
#include <latch>
#include <set>
#include <thread>
#include <utility>

namespace chat::store::test {
namespace {

using protocol::HistoryEntry;

// Walks a session from the newest page to the oldest; the ids oldest first.
std::vector<std::string> all_ids(Sync s, const std::string& session, const std::string& user, std::size_t limit) {
  std::vector<std::vector<std::string>> pages;
  std::string before;
  for (int guard = 0; guard < 10'000; ++guard) {
    auto [ec, page] = s.page(session, user, limit, before);
    EXPECT_FALSE(ec) << ec.message();
    std::vector<std::string> ids;
    for (auto& m : page.messages) ids.push_back(m.message_id);
    pages.push_back(ids);
    if (!page.next_before) break;
    before = *page.next_before;
  }
  std::vector<std::string> out;
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) out.insert(out.end(), it->begin(), it->end());
  return out;
}

std::vector<std::string> ids_of(const MessagePage& page) {
  std::vector<std::string> ids;
  for (auto& m : page.messages) ids.push_back(m.message_id);
  return ids;
}

// Fills a session with `n` messages m0..m{n-1}, one µs apart, alternating user/assistant.
void fill(Sync s, const std::string& session, const std::string& user, int n) {
  for (int i = 0; i < n; ++i) {
    auto id = "m" + std::to_string(i);
    auto text = "message " + std::to_string(i);
    auto ec = i % 2 == 0 ? s.accept(user_message(session, user, id, text, at(i))).first
                         : s.save(reply(session, id, text, at(i)));
    ASSERT_FALSE(ec) << ec.message();
  }
}

std::vector<std::string> expected_ids(int from, int to) {
  std::vector<std::string> ids;
  for (int i = from; i < to; ++i) ids.push_back("m" + std::to_string(i));
  return ids;
}

// ---- migrations ----------------------------------------------------------------

TEST_P(StoreConformance, MigrationsRunOnEmptyDatabaseAndAgainWithoutHarm) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hello there", at(0))).first);
  auto versions = backend_->scalar("SELECT count(*) FROM schema_migrations");
  EXPECT_NE(versions, "0");
  close_store();

  // A restart on the same database: nothing re-applied, nothing lost.
  ASSERT_NO_THROW(store());
  EXPECT_EQ(backend_->scalar("SELECT count(*) FROM schema_migrations"), versions);
  auto [ec, page] = sync().page("s1", "alice", 10);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(ids_of(page), std::vector<std::string>{"u1"});
}

TEST_P(StoreConformance, PodsStartingAtOnceMigrateOnce) {
  constexpr int kPods = 3;
  std::vector<std::unique_ptr<MessageStore>> stores(kPods);
  std::vector<std::string> errors(kPods);
  std::barrier start(kPods);
  std::vector<std::thread> pods;
  for (int i = 0; i < kPods; ++i) {
    pods.emplace_back([&, i] {
      start.arrive_and_wait();
      try {
        stores[i] = backend_->open();
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : pods) t.join();
  for (int i = 0; i < kPods; ++i) ASSERT_TRUE(stores[i]) << errors[i];
  auto versions = backend_->scalar("SELECT count(*) FROM schema_migrations");
  EXPECT_EQ(backend_->scalar("SELECT count(DISTINCT version) FROM schema_migrations"), versions);
  EXPECT_NE(versions, "0");
  for (auto& s : stores) EXPECT_FALSE(Sync(*s).flush());
}

// ---- accept and ownership ---------------------------------------------------

TEST_P(StoreConformance, FirstMessageCreatesSessionOwnedBySender) {
  auto [ec, history] = sync().accept(user_message("s1", "alice", "u1", "What is the capital of France?", at(0)));
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(history.empty());

  auto [oec, owner] = sync().owner("s1");
  ASSERT_FALSE(oec);
  EXPECT_EQ(owner, std::optional<std::string>("alice"));

  auto [pec, page] = sync().page("s1", "alice", 10);
  ASSERT_FALSE(pec);
  ASSERT_EQ(page.messages.size(), 1u);
  const auto& m = page.messages[0];
  EXPECT_EQ(m.message_id, "u1");
  EXPECT_EQ(m.session_id, "s1");
  EXPECT_EQ(m.role, "user");
  EXPECT_EQ(m.content, "What is the capital of France?");
  EXPECT_EQ(m.status, "complete");
  EXPECT_EQ(m.created_at, at(0));  // microseconds survive the round trip
}

TEST_P(StoreConformance, AnotherUsersSessionIsForbidden) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "mine", at(0))).first);

  auto [ec, history] = sync().accept(user_message("s1", "mallory", "u2", "let me in", at(1)));
  EXPECT_EQ(ec, Errc::forbidden);
  EXPECT_TRUE(history.empty());
  EXPECT_EQ(sync().page("s1", "mallory", 10).first, Errc::forbidden);
  EXPECT_EQ(sync().remove("s1", "mallory"), Errc::forbidden);

  // Nothing of mallory's was stored, and the session is still alice's.
  auto [pec, page] = sync().page("s1", "alice", 10);
  ASSERT_FALSE(pec);
  EXPECT_EQ(ids_of(page), std::vector<std::string>{"u1"});
  EXPECT_EQ(sync().owner("s1").second, std::optional<std::string>("alice"));
}

TEST_P(StoreConformance, AClaimedSessionIsTheClaimersAndTitledByItsFirstMessage) {
  ASSERT_FALSE(sync().claim("s1", "alice"));
  EXPECT_FALSE(sync().claim("s1", "alice"));  // again: still hers
  EXPECT_EQ(sync().claim("s1", "mallory"), Errc::forbidden);
  EXPECT_EQ(sync().owner("s1").second, std::optional<std::string>("alice"));
  EXPECT_EQ(sync().accept(user_message("s1", "mallory", "u0", "mine now", at(0))).first, Errc::forbidden);
  auto [pec, page] = sync().page("s1", "alice", 10);
  ASSERT_FALSE(pec);
  EXPECT_TRUE(page.messages.empty());
  EXPECT_EQ(page.title, "");

  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "Hello there", at(1))).first);
  auto [sec, sessions] = sync().sessions("alice");
  ASSERT_FALSE(sec);
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].title, "Hello there");
  // Every page of messages names the session, the older ones too.
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u2", "And another thing", at(2))).first);
  auto [nec, newest] = sync().page("s1", "alice", 1);
  ASSERT_FALSE(nec);
  EXPECT_EQ(newest.title, "Hello there");
  ASSERT_TRUE(newest.next_before);
  auto [oec, older] = sync().page("s1", "alice", 1, *newest.next_before);
  ASSERT_FALSE(oec);
  EXPECT_EQ(older.title, "Hello there");
  // A session with messages is claimed by its owner without harm, and by nobody else.
  EXPECT_FALSE(sync().claim("s1", "alice"));
  EXPECT_EQ(sync().claim("s1", "mallory"), Errc::forbidden);
}

TEST_P(StoreConformance, UnknownSessionHasNoOwnerAndNoMessages) {
  auto [ec, owner] = sync().owner("nope");
  EXPECT_FALSE(ec);
  EXPECT_FALSE(owner);
  EXPECT_EQ(sync().page("nope", "alice", 10).first, Errc::not_found);
  EXPECT_EQ(sync().remove("nope", "alice"), Errc::not_found);
}

// ---- history -------------------------------------------------------------------

TEST_P(StoreConformance, HistoryIsTheLastTurnsBeforeTheNewMessageOldestFirst) {
  fill(sync(), "s1", "alice", 6);  // m0 user, m1 assistant, … m5 assistant

  auto [ec, history] = sync().accept(user_message("s1", "alice", "m6", "next", at(6)), 3);
  ASSERT_FALSE(ec) << ec.message();
  std::vector<HistoryEntry> expected{{"assistant", "message 3"}, {"user", "message 4"}, {"assistant", "message 5"}};
  EXPECT_EQ(history, expected);

  auto [ec0, none] = sync().accept(user_message("s1", "alice", "m7", "no context", at(7)), 0);
  ASSERT_FALSE(ec0);
  EXPECT_TRUE(none.empty());

  auto [ecall, everything] = sync().accept(user_message("s1", "alice", "m8", "all", at(8)), 100);
  ASSERT_FALSE(ecall);
  ASSERT_EQ(everything.size(), 8u);
  EXPECT_EQ(everything.front(), (HistoryEntry{"user", "message 0"}));
  EXPECT_EQ(everything.back(), (HistoryEntry{"user", "no context"}));
}

// ---- assistant replies ------------------------------------------------------------

TEST_P(StoreConformance, AssistantReplyIsStoredWithItsFields) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  ASSERT_FALSE(sync().save(reply("s1", "a1", "Hello! How can I help?", at(5))));

  auto [ec, page] = sync().page("s1", "alice", 10);
  ASSERT_FALSE(ec);
  ASSERT_EQ(page.messages.size(), 2u);
  const auto& m = page.messages[1];
  EXPECT_EQ(m.message_id, "a1");
  EXPECT_EQ(m.role, "assistant");
  EXPECT_EQ(m.content, "Hello! How can I help?");
  EXPECT_EQ(m.token_count, 7);
  EXPECT_EQ(m.status, "complete");
  EXPECT_EQ(boost::json::parse(m.metadata_json), boost::json::parse(R"({"model":"demo-1","finish_reason":"stop"})"));
  EXPECT_EQ(m.created_at, at(5));
}

// A reply cut short here (its buffer evicted) and written whole by a pod that
// read it from the chunk log: the whole one stays, whichever came first.
TEST_P(StoreConformance, AnIncompleteReplyGivesWayToTheWholeOneAndNeverTheOtherWayRound) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  auto cut = [](std::string id, std::string text, SystemTime when) {
    auto r = reply("s1", std::move(id), std::move(text), when);
    r.status = "incomplete";
    r.metadata_json = R"({"error_code":"buffer_evicted"})";
    return r;
  };
  ASSERT_FALSE(sync().save(cut("a1", "Hel", at(5))));
  ASSERT_FALSE(sync().save(reply("s1", "a1", "Hello there", at(6))));
  ASSERT_FALSE(sync().save(reply("s1", "a2", "Whole", at(7))));
  ASSERT_FALSE(sync().save(cut("a2", "Who", at(7))));
  ASSERT_FALSE(sync().save(cut("a3", "Cut", at(8))));
  ASSERT_FALSE(sync().save(cut("a3", "Cut twice", at(8))));
  auto [ec, page] = sync().page("s1", "alice", 10);
  ASSERT_FALSE(ec);
  ASSERT_EQ(page.messages.size(), 4u);
  EXPECT_EQ(page.messages[1].content, "Hello there");
  EXPECT_EQ(page.messages[1].status, "complete");
  EXPECT_EQ(page.messages[1].created_at, at(5)) << "it keeps its place in the session";
  EXPECT_EQ(page.messages[2].content, "Whole");
  EXPECT_EQ(page.messages[2].status, "complete");
  EXPECT_EQ(page.messages[3].content, "Cut") << "between two cut ones, the first write wins";
}

TEST_P(StoreConformance, SecondWriteOfAReplyChangesNothing) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  ASSERT_FALSE(sync().save(reply("s1", "a1", "first", at(5))));
  ASSERT_FALSE(sync().save(reply("s1", "a1", "second", at(9))));

  auto [ec, page] = sync().page("s1", "alice", 10);
  ASSERT_FALSE(ec);
  ASSERT_EQ(page.messages.size(), 2u);
  EXPECT_EQ(page.messages[1].content, "first");
  EXPECT_EQ(page.messages[1].created_at, at(5));
  auto sessions = sync().sessions("alice").second;
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].last_message_at, at(5));  // the ignored write did not touch the session either
}

// Two pods see the same final chunk and write the same reply at the same moment.
TEST_P(StoreConformance, SameReplyFromTwoStoresAtOnceIsStoredOnce) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  auto other = backend_->open();
  constexpr int kReplies = 40;
  std::barrier start(2);
  std::atomic<int> failures{0};
  auto writer = [&](MessageStore& s, const std::string& who) {
    start.arrive_and_wait();
    std::vector<std::future<error_code>> results;
    for (int i = 0; i < kReplies; ++i) {
      auto p = std::make_shared<std::promise<error_code>>();
      results.push_back(p->get_future());
      s.save_assistant_message(reply("s1", "a" + std::to_string(i), who, at(10 + i)),
                               [p](error_code ec) { p->set_value(ec); });
    }
    for (auto& r : results) failures += r.get() ? 1 : 0;
  };
  std::thread a([&] { writer(store(), "pod-1"); });
  std::thread b([&] { writer(*other, "pod-2"); });
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);

  EXPECT_EQ(backend_->scalar("SELECT count(*) FROM messages WHERE role = 'assistant'"), std::to_string(kReplies));
  auto [ec, page] = sync().page("s1", "alice", 1000);
  ASSERT_FALSE(ec);
  ASSERT_EQ(page.messages.size(), kReplies + 1u);
  for (const auto& m : page.messages) {
    if (m.role == "assistant") {
      EXPECT_TRUE(m.content == "pod-1" || m.content == "pod-2") << m.content;
    }
  }
}

// Replies of two pods may land out of order: a session's clock moves forward only.
TEST_P(StoreConformance, AnOlderReplyLandingLateLeavesTheSessionClockAlone) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  ASSERT_FALSE(sync().save(reply("s1", "a2", "newer", at(20))));
  ASSERT_FALSE(sync().save(reply("s1", "a1", "older", at(10))));
  auto sessions = sync().sessions("alice").second;
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].last_message_at, at(20));
  EXPECT_EQ(sync().page("s1", "alice", 10).second.messages.size(), 3u);
}

TEST_P(StoreConformance, ReplyToUnknownSessionIsNotFound) {
  EXPECT_EQ(sync().save(reply("ghost", "a1", "text", at(0))), Errc::not_found);
}

// A reply written late (the spill journal, after an outage) whose session was
// deleted and made again by another user meanwhile: it does not land there.
TEST_P(StoreConformance, AReplyForAnotherUsersSessionIsNotWritten) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "mine", at(0))).first);
  ASSERT_FALSE(sync().remove("s1", "alice"));
  ASSERT_FALSE(sync().accept(user_message("s1", "mallory", "u2", "now mine", at(5))).first);
  auto late = reply("s1", "a1", "alice's reply", at(1));
  late.user_id = "alice";
  EXPECT_EQ(sync().save(late), Errc::not_found);
  auto [ec, page] = sync().page("s1", "mallory", 10);
  ASSERT_FALSE(ec);
  ASSERT_EQ(page.messages.size(), 1u);
  EXPECT_EQ(page.messages[0].content, "now mine");
  auto own = reply("s1", "a2", "mallory's reply", at(6));
  own.user_id = "mallory";
  EXPECT_FALSE(sync().save(own));
  EXPECT_EQ(sync().page("s1", "mallory", 10).second.messages.size(), 2u);
}

TEST_P(StoreConformance, ReplyWithUnknownStatusOrBadMetadataIsRejected) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  auto bad_status = reply("s1", "a1", "x", at(1));
  bad_status.status = "exploded";
  EXPECT_EQ(sync().save(bad_status), boost::system::errc::invalid_argument);
  auto bad_json = reply("s1", "a2", "x", at(2));
  bad_json.metadata_json = "{not json";
  EXPECT_EQ(sync().save(bad_json), boost::system::errc::invalid_argument);
  auto defaults = reply("s1", "a3", "x", at(3));
  defaults.status.clear();
  defaults.metadata_json.clear();
  ASSERT_FALSE(sync().save(defaults));
  auto page = sync().page("s1", "alice", 10).second;
  ASSERT_EQ(ids_of(page), (std::vector<std::string>{"u1", "a3"}));
  EXPECT_EQ(page.messages[1].status, "complete");
  EXPECT_EQ(boost::json::parse(page.messages[1].metadata_json), boost::json::object{});
}

// ---- discard ---------------------------------------------------------------------

TEST_P(StoreConformance, DiscardUndoesAccept) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "first", at(0))).first);
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u2", "second", at(5))).first);
  ASSERT_FALSE(sync().discard("u2"));
  auto sessions = sync().sessions("alice").second;
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].last_message_at, at(0));
  EXPECT_EQ(ids_of(sync().page("s1", "alice", 10).second), std::vector<std::string>{"u1"});

  // The message that created the session takes the session with it.
  ASSERT_FALSE(sync().discard("u1"));
  EXPECT_FALSE(sync().owner("s1").second);
  EXPECT_EQ(sync().discard("u1"), Errc::not_found);
}

// ---- pagination ------------------------------------------------------------------

TEST_P(StoreConformance, EmptySessionHasAnEmptyPage) {
  // The API never leaves a session empty, but an operator or a later feature may.
  backend_->scalar(
      "INSERT INTO chat_sessions (session_id, user_id, title, ai_provider, model_name, created_at, updated_at, "
      "last_message_at) SELECT 'empty', 'alice', 't', '', '', created_at, created_at, created_at FROM "
      "(SELECT " +
      std::string(store().status().embedded ? "0" : "now()") + " AS created_at) AS now");
  auto [ec, page] = sync().page("empty", "alice", 10);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(page.messages.empty());
  EXPECT_FALSE(page.next_before);
}

TEST_P(StoreConformance, PageOfExactlyLimitHasNoOlderPage) {
  fill(sync(), "s1", "alice", 5);
  auto [ec, page] = sync().page("s1", "alice", 5);
  ASSERT_FALSE(ec);
  EXPECT_EQ(ids_of(page), expected_ids(0, 5));
  EXPECT_FALSE(page.next_before);
}

TEST_P(StoreConformance, PageOfLimitPlusOnePointsToTheOlderPage) {
  fill(sync(), "s1", "alice", 6);
  auto [ec, page] = sync().page("s1", "alice", 5);
  ASSERT_FALSE(ec);
  EXPECT_EQ(ids_of(page), expected_ids(1, 6));  // the newest five, oldest first
  ASSERT_EQ(page.next_before, std::optional<std::string>("m1"));

  auto [ec2, older] = sync().page("s1", "alice", 5, *page.next_before);
  ASSERT_FALSE(ec2);
  EXPECT_EQ(ids_of(older), expected_ids(0, 1));
  EXPECT_FALSE(older.next_before);
}

TEST_P(StoreConformance, CursorAtTheOldestMessageGivesAnEmptyLastPage) {
  fill(sync(), "s1", "alice", 3);
  auto [ec, page] = sync().page("s1", "alice", 10, "m0");
  ASSERT_FALSE(ec);
  EXPECT_TRUE(page.messages.empty());
  EXPECT_FALSE(page.next_before);
}

TEST_P(StoreConformance, UnknownCursorIsNotFound) {
  fill(sync(), "s1", "alice", 3);
  ASSERT_FALSE(sync().accept(user_message("s2", "alice", "other", "elsewhere", at(1))).first);
  EXPECT_EQ(sync().page("s1", "alice", 10, "no-such-id").first, Errc::not_found);
  EXPECT_EQ(sync().page("s1", "alice", 10, "other").first, Errc::not_found);  // a message of another session
}

TEST_P(StoreConformance, WalkingAllPagesSeesEveryMessageOnce) {
  fill(sync(), "s1", "alice", 25);
  EXPECT_EQ(all_ids(sync(), "s1", "alice", 10), expected_ids(0, 25));
  EXPECT_EQ(all_ids(sync(), "s1", "alice", 1), expected_ids(0, 25));
  EXPECT_EQ(all_ids(sync(), "s1", "alice", 0), expected_ids(0, 25));  // 0 is treated as 1
}

TEST_P(StoreConformance, MessagesWithTheSameTimestampPageWithoutGapsOrRepeats) {
  for (int i = 0; i < 7; ++i) {
    auto id = "m" + std::to_string(i);
    ASSERT_FALSE(sync().accept(user_message("s1", "alice", id, "same instant", at(0))).first);
  }
  EXPECT_EQ(all_ids(sync(), "s1", "alice", 3), expected_ids(0, 7));  // ties ordered by id
}

// ---- sessions ----------------------------------------------------------------------

TEST_P(StoreConformance, SessionsAreListedNewestFirstWithTitles) {
  ASSERT_FALSE(sync().accept(user_message("old", "alice", "u1", "Plan a  trip\nto Lisbon in May", at(0))).first);
  ASSERT_FALSE(sync().accept(user_message("mid", "alice", "u2", "Explain monads", at(10))).first);
  ASSERT_FALSE(sync().accept(user_message("new", "alice", "u3", "Write a haiku", at(20))).first);
  ASSERT_FALSE(sync().accept(user_message("bobs", "bob", "u4", "Not alice's", at(30))).first);

  auto [ec, sessions] = sync().sessions("alice");
  ASSERT_FALSE(ec);
  ASSERT_EQ(sessions.size(), 3u);
  EXPECT_EQ(sessions[0].session_id, "new");
  EXPECT_EQ(sessions[1].session_id, "mid");
  EXPECT_EQ(sessions[2].session_id, "old");
  EXPECT_EQ(sessions[2].title, make_title("Plan a  trip\nto Lisbon in May"));
  EXPECT_EQ(sessions[2].title, "Plan a trip to Lisbon in May");
  EXPECT_EQ(sessions[2].user_id, "alice");
  EXPECT_EQ(sessions[2].ai_provider, "demo");
  EXPECT_EQ(sessions[2].model_name, "demo-1");
  EXPECT_EQ(sessions[2].created_at, at(0));

  // A reply in the oldest session brings it to the top; the title stays the first message's.
  ASSERT_FALSE(sync().save(reply("old", "a1", "Sure", at(40))));
  sessions = sync().sessions("alice").second;
  ASSERT_EQ(sessions.size(), 3u);
  EXPECT_EQ(sessions[0].session_id, "old");
  EXPECT_EQ(sessions[0].last_message_at, at(40));
  EXPECT_EQ(sessions[0].created_at, at(0));
  EXPECT_EQ(sessions[0].title, "Plan a trip to Lisbon in May");

  auto [lec, limited] = sync().sessions("alice", 2);
  ASSERT_FALSE(lec);
  ASSERT_EQ(limited.size(), 2u);
  EXPECT_EQ(limited[1].session_id, "new");
  EXPECT_TRUE(sync().sessions("nobody").second.empty());
}

TEST_P(StoreConformance, SessionsComeInPagesThatEndWhereTheNextBegins) {
  // Five sessions; "B1" and "a2" share a time, so the session id orders them, byte by byte ('B' before
  // 'a', whatever the database's collation), and limit 3 puts them on either side of a page's end.
  const std::vector<std::pair<std::string, int>> made{{"x", 0}, {"B1", 10}, {"a2", 10}, {"y", 20}, {"z", 30}};
  for (const auto& [id, second] : made)
    ASSERT_FALSE(sync().accept(user_message(id, "alice", "u-" + id, "hello " + id, at(second))).first);
  ASSERT_FALSE(sync().accept(user_message("bobs", "bob", "u-bob", "not alice's", at(15))).first);

  std::vector<std::string> listed;
  std::optional<SessionCursor> before;
  int pages = 0;
  do {
    auto [ec, page] = sync().session_page("alice", 3, before);
    ASSERT_FALSE(ec);
    ASSERT_LE(page.sessions.size(), 3u);
    for (const auto& s : page.sessions) listed.push_back(s.session_id);
    before = page.next_before;
    ASSERT_LT(++pages, 5) << "the cursor does not advance";
  } while (before);
  EXPECT_EQ(listed, (std::vector<std::string>{"z", "y", "a2", "B1", "x"}));
  EXPECT_EQ(pages, 2);

  // The cursor is a position: it holds when its session is gone meanwhile.
  auto [ec, first] = sync().session_page("alice", 2);
  ASSERT_FALSE(ec);
  ASSERT_TRUE(first.next_before);
  EXPECT_EQ(first.next_before->session_id, "y");
  ASSERT_FALSE(sync().remove("y", "alice"));
  auto second = sync().session_page("alice", 2, first.next_before).second;
  ASSERT_EQ(second.sessions.size(), 2u);
  EXPECT_EQ(second.sessions[0].session_id, "a2");
  EXPECT_EQ(second.sessions[1].session_id, "B1");
  EXPECT_TRUE(second.next_before);
  // A page that ends with the last session has no cursor.
  auto whole = sync().session_page("alice", 10).second;
  EXPECT_EQ(whole.sessions.size(), 4u);
  EXPECT_FALSE(whole.next_before);
}

TEST_P(StoreConformance, DeleteIsForTheOwnerOnlyAndRemovesEverything) {
  fill(sync(), "s1", "alice", 4);
  ASSERT_FALSE(sync().accept(user_message("s2", "alice", "keep", "another session", at(100))).first);

  EXPECT_EQ(sync().remove("s1", "bob"), Errc::forbidden);
  ASSERT_FALSE(sync().remove("s1", "alice"));

  EXPECT_EQ(sync().page("s1", "alice", 10).first, Errc::not_found);
  EXPECT_FALSE(sync().owner("s1").second);
  EXPECT_EQ(sync().remove("s1", "alice"), Errc::not_found);
  EXPECT_EQ(backend_->scalar("SELECT count(*) FROM messages WHERE session_id = 's1'"), "0");
  EXPECT_EQ(sync().save(reply("s1", "late", "a reply that finished after the delete", at(200))), Errc::not_found);

  auto sessions = sync().sessions("alice").second;
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].session_id, "s2");
}

// ---- concurrency, queueing, threads -------------------------------------------------

TEST_P(StoreConformance, ConcurrentWritersStoreEveryMessageExactlyOnce) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 60;
  ASSERT_FALSE(sync().accept(user_message("shared", "alice", "seed", "start", at(0))).first);
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      Sync s(store());
      for (int i = 0; i < kPerThread; ++i) {
        auto id = "t" + std::to_string(t) + "-" + std::to_string(i);
        // Every thread writes its own session and the shared one.
        auto own = "own-" + std::to_string(t);
        if (s.accept(user_message(own, "alice", id + "-u", "question", at(1 + i))).first) ++failures;
        if (s.save(reply(own, id + "-a", "answer", at(1 + i)))) ++failures;
        if (s.save(reply("shared", id, "shared answer", at(1 + i)))) ++failures;
      }
    });
  }
  for (auto& w : writers) w.join();
  EXPECT_EQ(failures.load(), 0);

  auto shared = all_ids(sync(), "shared", "alice", 50);
  EXPECT_EQ(shared.size(), 1u + kThreads * kPerThread);
  EXPECT_EQ(std::set<std::string>(shared.begin(), shared.end()).size(), shared.size());
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(all_ids(sync(), "own-" + std::to_string(t), "alice", 50).size(), 2u * kPerThread);
  }
  EXPECT_EQ(backend_->scalar("SELECT count(*) FROM messages"), std::to_string(1 + 3 * kThreads * kPerThread));
}

// Every store thread held in a callback, so jobs queued meanwhile stay queued
// and are taken together once it lets go.
class ParkedStoreThreads {
 public:
  ParkedStoreThreads(MessageStore& store, unsigned threads) : parked_(threads) {
    for (unsigned i = 0; i < threads; ++i) {
      store.session_owner("any", [this, released = released_](error_code, std::optional<std::string>) {
        parked_.count_down();
        released.wait();
      });
    }
    parked_.wait();
  }
  ~ParkedStoreThreads() { release(); }
  void release() {
    if (!std::exchange(released_once_, true)) release_.set_value();
  }

 private:
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  std::latch parked_;
  bool released_once_ = false;
};

TEST_P(StoreConformance, FullQueueAnswersOverloadedAtOnce) {
  constexpr std::size_t kLimit = 3;
  auto small = backend_->open(kLimit);
  ParkedStoreThreads parked(*small, backend_->threads());

  std::atomic<int> completed{0};
  for (std::size_t i = 0; i < kLimit; ++i) small->flush([&](error_code ec) { completed += ec ? 0 : 1; });

  bool answered = false;
  error_code overflow;
  auto caller = std::this_thread::get_id();
  std::thread::id answered_on;
  small->session_owner("any", [&](error_code ec, std::optional<std::string>) {
    answered = true;
    overflow = ec;
    answered_on = std::this_thread::get_id();
  });
  EXPECT_TRUE(answered) << "a full queue must answer before the call returns";
  EXPECT_EQ(overflow, Errc::overloaded);
  EXPECT_EQ(answered_on, caller);

  parked.release();
  // Every job that found room still runs.
  auto deadline = std::chrono::steady_clock::now() + kCallbackTimeout;
  while (completed.load() < static_cast<int>(kLimit) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(completed.load(), static_cast<int>(kLimit));
  EXPECT_FALSE(Sync(*small).flush());
}

// Jobs that waited together (a store may run them in one transaction) each
// get their own answer: one that fails changes nothing and fails no other.
TEST_P(StoreConformance, JobsQueuedTogetherEachGetTheirOwnAnswer) {
  ASSERT_FALSE(sync().accept(user_message("bobs", "bob", "b1", "mine", at(0))).first);
  std::vector<std::pair<std::string, std::future<error_code>>> answers;
  auto expect = [&](std::string what, auto start) {
    auto promise = std::make_shared<std::promise<error_code>>();
    answers.emplace_back(std::move(what), promise->get_future());
    start([promise](error_code ec) { promise->set_value(ec); });
  };
  {
    ParkedStoreThreads parked(store(), backend_->threads());
    for (int i = 0; i < 4; ++i) {
      auto session = "s" + std::to_string(i);
      expect(session, [&](auto cb) {
        store().accept_user_message(user_message(session, "alice", session + "-u", "hi", at(1 + i)), 20,
                                    [cb](error_code ec, std::vector<protocol::HistoryEntry>) { cb(ec); });
      });
      if (i == 1) {
        expect("intruder", [&](auto cb) {
          store().accept_user_message(user_message("bobs", "alice", "intruder", "let me in", at(10)), 20,
                                      [cb](error_code ec, std::vector<protocol::HistoryEntry>) { cb(ec); });
        });
        expect("orphan reply", [&](auto cb) { store().save_assistant_message(reply("nowhere", "o1", "x", at(11)), cb); });
        expect("missing discard", [&](auto cb) { store().discard_message("missing", cb); });
      }
    }
    // To a session stored before: a pool may run the jobs queued here in any order.
    expect("reply", [&](auto cb) { store().save_assistant_message(reply("bobs", "b2", "hello", at(20)), cb); });
  }
  for (auto& [what, answer] : answers) {
    ASSERT_EQ(answer.wait_for(kCallbackTimeout), std::future_status::ready) << what;
    auto ec = answer.get();
    if (what == "intruder") EXPECT_EQ(ec, Errc::forbidden) << what;
    else if (what == "orphan reply" || what == "missing discard") EXPECT_EQ(ec, Errc::not_found) << what;
    else EXPECT_FALSE(ec) << what << ": " << ec.message();
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(all_ids(sync(), "s" + std::to_string(i), "alice", 10).size(), 1u);
  EXPECT_EQ(all_ids(sync(), "bobs", "bob", 10), (std::vector<std::string>{"b1", "b2"}));
  EXPECT_EQ(backend_->scalar("SELECT count(*) FROM messages"), "6");
  EXPECT_EQ(backend_->scalar("SELECT count(*) FROM chat_sessions"), "5");
}

TEST_P(StoreConformance, CallbacksRunOnAStoreThread) {
  auto caller = std::this_thread::get_id();
  auto [ec, on] = await<std::thread::id>([&](auto cb) {
    store().session_owner("s", [cb](error_code e, std::optional<std::string>) { cb(e, std::this_thread::get_id()); });
  });
  ASSERT_FALSE(ec);
  EXPECT_NE(on, caller);
}

TEST_P(StoreConformance, FlushWaitsForEverythingQueuedBeforeIt) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  constexpr int kWrites = 100;
  std::atomic<int> done{0};
  for (int i = 0; i < kWrites; ++i)
    store().save_assistant_message(reply("s1", "a" + std::to_string(i), "x", at(1 + i)),
                                   [&](error_code ec) { done += ec ? 0 : 1; });
  ASSERT_FALSE(sync().flush());
  EXPECT_EQ(done.load(), kWrites);
}

// A flush that finds the queue full is answered overloaded, once: also when
// the work before it ended meanwhile on a store thread, which answers the
// flushes it was waiting for.
TEST_P(StoreConformance, AFlushIsAnsweredOnceAlsoWhenTheQueueIsFull) {
  auto small = backend_->open(2);
  ASSERT_FALSE(Sync(*small).accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  constexpr int kFlushes = 3'000;
  std::vector<std::atomic<int>> answers(kFlushes);
  std::atomic<bool> flushing{true};
  std::thread writer([&] {
    for (int i = 0; flushing.load(); ++i)
      small->save_assistant_message(reply("s1", "w" + std::to_string(i), "x", at(1)), [](error_code) {});
  });
  for (int i = 0; i < kFlushes; ++i) small->flush([&answers, i](error_code) { answers[i].fetch_add(1); });
  flushing = false;
  writer.join();
  // Once the queue has room again, a flush waits for everything before it.
  error_code ec;
  for (int i = 0; i < 1'000 && (ec = Sync(*small).flush()) == Errc::overloaded; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_FALSE(ec) << ec.message();
  int twice = 0, never = 0;
  for (auto& a : answers) {
    twice += a.load() > 1;
    never += a.load() == 0;
  }
  EXPECT_EQ(twice, 0) << "flushes answered more than once";
  EXPECT_EQ(never, 0) << "flushes never answered";
}

TEST_P(StoreConformance, DestructionRunsTheQueuedWork) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  constexpr int kWrites = 50;
  std::atomic<int> done{0};
  for (int i = 0; i < kWrites; ++i)
    store().save_assistant_message(reply("s1", "a" + std::to_string(i), "x", at(1 + i)),
                                   [&](error_code ec) { done += ec ? 0 : 1; });
  close_store();
  EXPECT_EQ(done.load(), kWrites);
  EXPECT_EQ(all_ids(sync(), "s1", "alice", 100).size(), kWrites + 1u);
}

TEST_P(StoreConformance, AThrowingCallbackDoesNotStopTheStore) {
  store().flush([](error_code) { throw std::runtime_error("careless caller"); });
  EXPECT_FALSE(sync().flush());
}

}  // namespace
}  // namespace chat::store::test
