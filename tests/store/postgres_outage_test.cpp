// PostgresStore while the server goes away and comes back: connections are
// replaced by themselves, and replies completed during the outage are written
// exactly once when it ends.

#include <atomic>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include "store/pg_link.hpp"
#include "store/postgres_fixture.hpp"
#include "store/postgres_store.hpp"
#include "store/spill_record.hpp"
#include "store/store_conformance.hpp"

namespace chat::store::test {
namespace {

using namespace std::chrono_literals;
using chat::test::PostgresServer;

// A server of its own: these tests stop it.
class PostgresOutage : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      server_ = new PostgresServer();
    } catch (const std::exception& e) {
      start_error_ = e.what();  // every test then fails with it: these tests never skip
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "PostgreSQL could not start: " << start_error_;
    server_->start();  // a failed test may have left it stopped
    database_ = server_->create_database();
    store_ = std::make_unique<PostgresStore>(config());
  }

  config::StoreConfig config() const {
    auto cfg = server_->store_config(database_);
    cfg.spill_dir = spill_dir().string();
    return cfg;
  }
  std::filesystem::path spill_dir() const { return spill_.path() / "spill"; }

  std::string scalar(const std::string& sql) { return server_->query(database_, sql); }

  template <class Predicate>
  static bool eventually(Predicate p, std::chrono::milliseconds limit = 15s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!p()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }

  static PostgresServer* server_;
  static std::string start_error_;
  TempDir spill_{"chat-pg-spill"};
  std::string database_;
  std::unique_ptr<PostgresStore> store_;
};

PostgresServer* PostgresOutage::server_ = nullptr;
std::string PostgresOutage::start_error_;

TEST_F(PostgresOutage, KilledConnectionsAreReopenedAndTheJobRetried) {
  Sync s(*store_);
  ASSERT_FALSE(s.accept(user_message("s1", "alice", "u1", "before", at(0))).first);
  // What a failover or an idle-connection killer does to the pool, behind its back.
  scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '" + database_ +
         "' AND pid <> pg_backend_pid()");
  auto [ec, history] = s.accept(user_message("s1", "alice", "u2", "after", at(1)));
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(history.size(), 1u);
  EXPECT_TRUE(store_->connected());
}

TEST_F(PostgresOutage, ServerRestartIsInvisibleToCallers) {
  Sync s(*store_);
  ASSERT_FALSE(s.accept(user_message("s1", "alice", "u1", "before", at(0))).first);
  server_->stop();
  server_->start();
  ASSERT_FALSE(s.accept(user_message("s1", "alice", "u2", "after", at(1))).first);
  EXPECT_EQ(scalar("SELECT count(*) FROM messages"), "2");
}

TEST_F(PostgresOutage, ALinkWaitingOutItsBackoffReconnectsOnceAnotherHasConnected) {
  pg::PoolHealth pool;
  pg::ConnectParams params(config());
  pg::Link first(params, &pool);
  pg::Link second(params, &pool);
  auto select_one = [](pg::Connection& c) { return c.exec("SELECT 1"); };
  // The check means something only while the second link's 2 s backoff lasts:
  // a start of the server slower than that is tried again.
  for (int round = 0;; ++round) {
    ASSERT_LT(round, 3) << "the server never started within a backoff window";
    first.close();
    server_->stop();
    // Failed attempts (as during a crash recovery) back the link off to 2 s.
    for (int i = 0; i < 6; ++i) EXPECT_FALSE(second.connect_now());
    auto window_ends = std::chrono::steady_clock::now() + pg::kMaxBackoff;
    EXPECT_EQ(second.run(select_one), Errc::unavailable) << "inside its backoff window while the server is down";
    server_->start();
    ASSERT_TRUE(first.connect_now());
    ASSERT_EQ(pool.links_up.load(), 1);
    if (std::chrono::steady_clock::now() + 500ms > window_ends) continue;
    // The server is back (connected() says so): the job must not fail on the other link.
    auto ec = second.run(select_one);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(pool.links_up.load(), 2);
    return;
  }
}

TEST_F(PostgresOutage, RepliesCompletedDuringAnOutageAreStoredExactlyOnceAfterIt) {
  Sync s(*store_);
  ASSERT_FALSE(s.accept(user_message("s1", "alice", "u1", "question", at(0))).first);
  ASSERT_FALSE(s.save(reply("s1", "before", "stored before the outage", at(1))));
  ASSERT_TRUE(store_->connected());

  server_->stop();
  // Requests that need an answer now fail fast; connected() turns false even for idle connections.
  EXPECT_EQ(s.accept(user_message("s1", "alice", "u2", "during", at(2))).first, Errc::unavailable);
  EXPECT_TRUE(eventually([&] { return !store_->connected(); }));

  constexpr int kReplies = 20;
  for (int i = 0; i < kReplies; ++i) {
    auto ec = s.save(reply("s1", "out-" + std::to_string(i), "written during the outage", at(10 + i)));
    EXPECT_FALSE(ec) << "a reply is accepted into the retry queue: " << ec.message();
  }
  EXPECT_FALSE(s.save(reply("s1", "out-3", "a second pod's copy", at(50))));
  EXPECT_FALSE(s.save(reply("s1", "before", "a late duplicate", at(51))));
  EXPECT_GE(store_->status().queued, static_cast<std::size_t>(kReplies)) << "the held-back replies show as waiting";

  // flush covers the retry queue, so it waits for the server.
  auto flushed = std::make_shared<std::promise<error_code>>();
  auto flush_result = flushed->get_future();
  store_->flush([flushed](error_code ec) { flushed->set_value(ec); });
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(flush_result.wait_for(0s), std::future_status::timeout) << "flush finished while replies were unwritten";

  server_->start();
  ASSERT_EQ(flush_result.wait_for(60s), std::future_status::ready);
  EXPECT_FALSE(flush_result.get());

  EXPECT_EQ(scalar("SELECT count(*) FROM messages WHERE message_id LIKE 'out-%'"), std::to_string(kReplies));
  EXPECT_EQ(scalar("SELECT count(*) FROM messages"), std::to_string(kReplies + 2));
  EXPECT_EQ(scalar("SELECT content FROM messages WHERE message_id = 'out-3'"), "written during the outage");
  EXPECT_EQ(scalar("SELECT content FROM messages WHERE message_id = 'before'"), "stored before the outage");
  auto [ec, page] = s.page("s1", "alice", 100);
  ASSERT_FALSE(ec);
  EXPECT_EQ(page.messages.size(), kReplies + 2u);
  EXPECT_TRUE(eventually([&] { return store_->connected(); }));
}

// A failover whose connections reach a standby: writes fail with 25006
// (read-only). That is an outage too: the reply waits, it is not dropped.
TEST_F(PostgresOutage, AReplyRefusedByAReadOnlyServerIsWrittenOnceItTakesWritesAgain) {
  Sync s(*store_);
  ASSERT_FALSE(s.accept(user_message("s1", "alice", "u1", "question", at(0))).first);
  const auto drop_sessions = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '" +
                             database_ + "' AND pid <> pg_backend_pid()";
  server_->query("postgres", "ALTER DATABASE " + database_ + " SET default_transaction_read_only = on");
  server_->query("postgres", drop_sessions);  // the pool's next sessions are read-only

  auto ec = s.save(reply("s1", "r1", "written after the failover", at(1)));
  EXPECT_FALSE(ec) << "the reply is taken into the retry queue: " << ec.message();
  EXPECT_EQ(scalar("SELECT count(*) FROM messages WHERE message_id = 'r1'"), "0");
  EXPECT_EQ(s.accept(user_message("s1", "alice", "u2", "meanwhile", at(2))).first, Errc::unavailable)
      << "a new chat cannot be stored: the store is unavailable, not broken";

  server_->query("postgres", "ALTER DATABASE " + database_ + " RESET default_transaction_read_only");
  server_->query("postgres", drop_sessions);
  EXPECT_TRUE(eventually([&] { return scalar("SELECT count(*) FROM messages WHERE message_id = 'r1'") == "1"; }));
  EXPECT_EQ(scalar("SELECT content FROM messages WHERE message_id = 'r1'"), "written after the failover");
}

TEST_F(PostgresOutage, RepliesBeyondTheRetryQueueWaitOnDiskAndOutliveTheStore) {
  auto cfg = config();
  cfg.queue_limit = 2;  // two replies in memory; the others go to the spill journal
  auto small = std::make_unique<PostgresStore>(cfg);
  Sync s(*small);
  ASSERT_FALSE(s.accept(user_message("s1", "alice", "u1", "question", at(0))).first);
  server_->stop();
  constexpr int kReplies = 8;
  for (int i = 0; i < kReplies; ++i) {
    auto ec = s.save(reply("s1", "r" + std::to_string(i), "kept", at(1 + i)));
    EXPECT_FALSE(ec) << "reply " << i << ": " << ec.message();
  }
  EXPECT_FALSE(spill_files(spill_dir()).empty());
  EXPECT_GT(small->status().spilled_bytes, 0u) << "the replies on disk show";

  small.reset();  // still down: the replies in memory join those on disk
  server_->start();
  PostgresStore next(cfg);
  EXPECT_FALSE(Sync(next).flush());
  EXPECT_EQ(scalar("SELECT count(*) FROM messages WHERE role = 'assistant'"), std::to_string(kReplies));
  EXPECT_TRUE(spill_files(spill_dir()).empty());
  EXPECT_EQ(next.status().spilled_bytes, 0u);
  EXPECT_EQ(next.status().queued, 0u);
}

// The message ids of the replies in the journal's segments, one per record.
std::multiset<std::string> journaled_ids(const std::filesystem::path& dir) {
  std::multiset<std::string> ids;
  for (const auto& file : spill_files(dir)) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
      if (auto m = decode_spill_record(line)) ids.insert(m->message_id);
    }
  }
  return ids;
}

// A server that hangs (SIGSTOP) while the store stops: the stop waits on the
// query in flight, maybe past the process's grace period. Every reply not yet
// written is on disk before that wait, so a kill then loses none.
TEST_F(PostgresOutage, RepliesUnwrittenWhenAStoreStopsOnAHungServerAreOnDiskBeforeItWaits) {
  auto cfg = config();
  cfg.pool_size = 1;  // the first reply hangs in flight, the others wait in the queue
  auto hung = std::make_unique<PostgresStore>(cfg);
  ASSERT_FALSE(Sync(*hung).accept(user_message("s1", "alice", "u1", "question", at(0))).first);

  server_->pause();
  struct Resume {
    PostgresServer* server;
    ~Resume() { server->resume(); }
  } resume_at_exit{server_};
  constexpr int kReplies = 5;
  std::set<std::string> expected;
  for (int i = 0; i < kReplies; ++i) {
    auto id = "hung-" + std::to_string(i);
    expected.insert(id);
    hung->save_assistant_message(reply("s1", id, "unwritten at stop", at(1 + i)), [](error_code) {});
  }
  auto stopped = std::async(std::launch::async, [&] { hung.reset(); });
  EXPECT_TRUE(eventually([&] {
    auto ids = journaled_ids(spill_dir());
    return std::set<std::string>(ids.begin(), ids.end()) == expected;
  })) << "the replies were not on disk while the stop waited";
  EXPECT_EQ(stopped.wait_for(0s), std::future_status::timeout) << "the stop did not wait on the hung server";

  server_->resume();
  ASSERT_EQ(stopped.wait_for(60s), std::future_status::ready);
  stopped.get();
  PostgresStore next(cfg);  // writes what the journal holds: those written meanwhile change nothing
  EXPECT_FALSE(Sync(next).flush());
  EXPECT_EQ(scalar("SELECT count(*) FROM messages WHERE message_id LIKE 'hung-%'"), std::to_string(kReplies));
  EXPECT_EQ(scalar("SELECT count(DISTINCT content) FROM messages WHERE message_id LIKE 'hung-%'"), "1");
  EXPECT_TRUE(journaled_ids(spill_dir()).empty());
}

}  // namespace
}  // namespace chat::store::test
