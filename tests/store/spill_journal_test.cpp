// SpillJournal: the on-disk overflow of the stores' queues (spill_journal.hpp).

#include "store/spill_journal.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "store/spill_record.hpp"
#include "store/store_conformance.hpp"

namespace chat::store::test {
namespace {

namespace fs = std::filesystem;

class SpillJournalTest : public testing::Test {
 protected:
  fs::path dir() const { return root_.path() / "spill"; }
  std::vector<fs::path> segment_files() const { return spill_files(dir()); }

  static std::vector<std::string> drain(SpillJournal& j) {
    std::vector<std::string> ids;
    while (auto m = j.front()) {
      ids.push_back(m->message_id);
      j.pop_front();
    }
    return ids;
  }

  static std::vector<std::string> ids(int from, int to) {
    std::vector<std::string> out;
    for (int i = from; i < to; ++i) out.push_back("r" + std::to_string(i));
    return out;
  }

  static void append(SpillJournal& j, int from, int to) {
    for (int i = from; i < to; ++i) ASSERT_FALSE(j.append(reply("s1", "r" + std::to_string(i), "text", at(i))));
  }

  TempDir root_{"chat-spill"};
};

TEST(SpillRecord, EveryFieldAndAnyByteSurviveTheRoundTrip) {
  AssistantMessage m{"id-1",
                     "s-1",
                     std::string("line one\nline two\0nul \xff\xfe not utf-8", 31),
                     42,
                     "incomplete",
                     R"({"model":"m","finish_reason":"length"})",
                     at(7),
                     "alice"};
  auto line = encode_spill_record(m);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto back = decode_spill_record(line);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->message_id, m.message_id);
  EXPECT_EQ(back->session_id, m.session_id);
  EXPECT_EQ(back->content, m.content);
  EXPECT_EQ(back->token_count, 42);
  EXPECT_EQ(back->status, m.status);
  EXPECT_EQ(back->metadata_json, m.metadata_json);
  EXPECT_EQ(back->created_at, m.created_at);
  EXPECT_EQ(back->user_id, "alice");
  m.user_id.clear();  // a record without it (as earlier versions wrote them) reads back without it
  auto unnamed = decode_spill_record(encode_spill_record(m));
  ASSERT_TRUE(unnamed);
  EXPECT_EQ(unnamed->user_id, "");
  EXPECT_FALSE(decode_spill_record("{\"v\":1}"));
  EXPECT_FALSE(decode_spill_record("not json"));
}

TEST_F(SpillJournalTest, RecordsComeBackInOrderAndTheFilesGoOnceRead) {
  SpillJournal j(dir());
  EXPECT_TRUE(j.empty());
  EXPECT_FALSE(j.front());
  append(j, 0, 5);
  EXPECT_FALSE(j.empty());
  EXPECT_EQ(segment_files().size(), 1u);
  auto first = j.front();
  ASSERT_TRUE(first);
  EXPECT_EQ(j.front()->message_id, first->message_id) << "front() leaves the record in place";
  EXPECT_EQ(drain(j), ids(0, 5));
  EXPECT_TRUE(j.empty());
  EXPECT_TRUE(segment_files().empty());
  append(j, 5, 7);  // a drained journal starts a new segment
  EXPECT_EQ(drain(j), ids(5, 7));
}

TEST_F(SpillJournalTest, AppendsWhileReadingKeepTheirOrderAcrossSegments) {
  SpillJournal j(dir(), 300);  // a few records per segment
  append(j, 0, 10);
  EXPECT_GT(segment_files().size(), 2u);
  std::vector<std::string> seen;
  for (int i = 0; i < 4; ++i) {
    seen.push_back(j.front()->message_id);
    j.pop_front();
  }
  append(j, 10, 20);
  auto rest = drain(j);
  seen.insert(seen.end(), rest.begin(), rest.end());
  EXPECT_EQ(seen, ids(0, 20));
  EXPECT_TRUE(segment_files().empty());
}

TEST_F(SpillJournalTest, ANewJournalAdoptsWhatADestroyedOneLeft) {
  {
    SpillJournal first(dir(), 300);
    append(first, 0, 10);
    first.front();
    first.pop_front();  // r0 written; its segment is not finished, so r0 comes back (writes are idempotent)
  }
  SpillJournal second(dir());
  EXPECT_FALSE(second.empty());
  append(second, 10, 12);
  EXPECT_EQ(drain(second), ids(0, 12));
  EXPECT_TRUE(segment_files().empty());
}

TEST_F(SpillJournalTest, ALiveJournalsRecordsAreNotAdoptedByAnother) {
  auto owner = std::make_unique<SpillJournal>(dir());
  append(*owner, 0, 3);
  {
    SpillJournal other(dir());
    EXPECT_TRUE(other.empty());
    append(other, 3, 4);
    EXPECT_EQ(drain(other), ids(3, 4));
  }
  owner.reset();  // gone without reading: a third journal finds the records
  SpillJournal third(dir());
  EXPECT_EQ(drain(third), ids(0, 3));
}

TEST_F(SpillJournalTest, ATornLastRecordAndABadLineAreSkipped) {
  {
    SpillJournal j(dir());
    append(j, 0, 2);
  }
  auto file = segment_files().at(0);
  {
    std::ofstream out(file, std::ios::app);
    out << "not a record\n" << encode_spill_record(reply("s1", "r2", "text", at(2))) << "\n{\"v\":1,\"message_";
  }
  SpillJournal j(dir());
  EXPECT_EQ(drain(j), ids(0, 3));
  EXPECT_TRUE(j.empty());
  EXPECT_TRUE(segment_files().empty());
}

// A segment of a later record format (a newer chatd's, left by a rollback
// during an outage) is kept for a chatd that reads it, not dropped as bad.
TEST_F(SpillJournalTest, ASegmentOfANewerFormatIsLeftForAChatdThatReadsIt) {
  fs::create_directories(dir());
  const auto newer = dir() / "00000000000000000001-1-1.spill";
  std::ofstream(newer) << R"({"v":2,"message_id":"from-the-future","parts":[]})" << "\n"
                       << encode_spill_record(reply("s1", "r9", "text", at(9))) << "\n";
  for (int round = 0; round < 2; ++round) {
    SpillJournal j(dir());
    append(j, 0, 2);
    EXPECT_EQ(drain(j), ids(0, 2)) << "round " << round;
    EXPECT_TRUE(j.empty());
    EXPECT_TRUE(fs::exists(newer)) << "round " << round;
  }
  EXPECT_EQ(segment_files(), std::vector<fs::path>{newer});
}

TEST_F(SpillJournalTest, AnAppendThatCannotBeWrittenIsAnErrorCode) {
  SpillJournal j(dir());
  fs::remove_all(dir());
  std::ofstream(dir()) << "a file where the directory was";
  auto ec = j.append(reply("s1", "r0", "text", at(0)));
  EXPECT_TRUE(ec);
  EXPECT_TRUE(j.empty());
}

TEST_F(SpillJournalTest, ADirectoryThatCannotBeCreatedFailsTheStart) {
  EXPECT_THROW(SpillJournal("/dev/null/spill"), std::runtime_error);
}

TEST(SpillDir, DefaultsBesideTheSqliteFileOrPerPostgresDatabase) {
  config::StoreConfig cfg;
  cfg.path = "data/chat.db";
  EXPECT_EQ(spill_dir_for(cfg), fs::path("data/chat.db.spill"));
  cfg.host = "db.internal";
  cfg.port = 5433;
  cfg.name = "chat/prod";
  EXPECT_EQ(spill_dir_for(cfg), fs::temp_directory_path() / "chatd-spill-db.internal-5433-chat_prod");
  cfg.spill_dir = "/var/lib/chatd/spill";
  EXPECT_EQ(spill_dir_for(cfg), fs::path("/var/lib/chatd/spill"));
}

}  // namespace
}  // namespace chat::store::test
