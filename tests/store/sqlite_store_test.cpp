// SqliteStore: the conformance suite on a fresh file per test, plus what only
// the SQLite store promises (its file, its pragmas, its time encoding, its
// transactions inside a transaction).

#include "store/sqlite_store.hpp"

#include <sqlite3.h>

#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <future>
#include <thread>

#include "store/sqlite_db.hpp"
#include "store/store_conformance.hpp"

namespace chat::store::test {
namespace {

namespace fs = std::filesystem;

struct CloseDb {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct Finalize {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};

class SqliteBackend final : public Backend {
 public:
  // The directories below the temporary one do not exist: the store creates them.
  std::string path() const { return (dir_.path() / "nested" / "data" / "chat.db").string(); }

  std::unique_ptr<MessageStore> open(std::size_t queue_limit) override {
    config::StoreConfig cfg;
    cfg.path = path();
    cfg.queue_limit = queue_limit;
    return std::make_unique<SqliteStore>(cfg);
  }

  std::string scalar(const std::string& sql) override {
    sqlite3* raw = nullptr;
    int rc = sqlite3_open_v2(path().c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr);
    std::unique_ptr<sqlite3, CloseDb> db(raw);
    if (rc != SQLITE_OK) throw std::runtime_error("test cannot open " + path());
    sqlite3_busy_timeout(db.get(), 5000);
    sqlite3_stmt* stmt_raw = nullptr;
    if (sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &stmt_raw, nullptr) != SQLITE_OK)
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db.get()));
    std::unique_ptr<sqlite3_stmt, Finalize> stmt(stmt_raw);
    rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_ROW) {
      auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
      return text != nullptr ? text : "";
    }
    if (rc != SQLITE_DONE) throw std::runtime_error(sql + ": " + sqlite3_errmsg(db.get()));
    return {};
  }

  unsigned threads() const override { return 1; }
  // The default: beside the database file.
  fs::path spill_dir() const override { return path() + ".spill"; }

 private:
  TempDir dir_{"chat-sqlite"};
};

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance,
                         testing::Values(BackendParam{"sqlite", [] { return std::make_unique<SqliteBackend>(); }}),
                         backend_name);

TEST(SqliteStore, CreatesTheFileAndItsDirectoryInWalMode) {
  SqliteBackend backend;
  ASSERT_FALSE(fs::exists(backend.path()));
  auto store = backend.open(100);
  EXPECT_TRUE(fs::exists(backend.path()));
  EXPECT_EQ(backend.scalar("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(store->status().backend, "sqlite");
  EXPECT_TRUE(store->connected());
}

TEST(SqliteStore, TimesAreStoredAsMicrosecondsSinceTheEpoch) {
  SqliteBackend backend;
  auto store = backend.open(100);
  ASSERT_FALSE(Sync(*store).accept(user_message("s1", "alice", "u1", "hi", at(0))).first);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(at(0).time_since_epoch()).count();
  EXPECT_EQ(backend.scalar("SELECT created_at FROM messages"), std::to_string(micros));
  EXPECT_EQ(backend.scalar("SELECT last_message_at FROM chat_sessions"), std::to_string(micros));
}

// The store thread runs jobs that waited together in one transaction; each
// job's own transaction is then a savepoint that commits with it or rolls back
// alone.
TEST(SqliteTransaction, InsideATransactionOneRollsBackAloneAndTheOtherCommitsWithIt) {
  TempDir dir{"chat-sqlite-tx"};
  auto db = sqlite::Connection::open((dir.path() / "tx.db").string());
  ASSERT_FALSE(db.exec("CREATE TABLE t (x TEXT)"));
  auto count = [&](const std::string& x) {
    auto q = db.query("SELECT count(*) FROM t WHERE x = ?1");
    q.bind(x);
    return q.next() ? q.integer(0) : -1;
  };
  {
    sqlite::Transaction outer(db, sqlite::Transaction::Mode::write);
    ASSERT_FALSE(outer.error());
    {
      sqlite::Transaction kept(db, sqlite::Transaction::Mode::write);
      ASSERT_FALSE(kept.error());
      ASSERT_FALSE(db.query("INSERT INTO t VALUES (?1)").bind("kept").run());
      ASSERT_FALSE(kept.commit());
    }
    {
      sqlite::Transaction dropped(db, sqlite::Transaction::Mode::write);
      ASSERT_FALSE(dropped.error());
      ASSERT_FALSE(db.query("INSERT INTO t VALUES (?1)").bind("dropped").run());
    }  // an early return: not committed
    EXPECT_TRUE(db.in_transaction()) << "the savepoint's rollback leaves the outer transaction open";
    ASSERT_FALSE(outer.commit());
  }
  EXPECT_FALSE(db.in_transaction());
  EXPECT_EQ(count("kept"), 1);
  EXPECT_EQ(count("dropped"), 0);
}

// Another process holding the file's write lock past the busy timeout (a
// backup, an operator's sqlite3 shell in a transaction): the reply is not
// lost but waits in the spill journal and is written once the lock is gone.
TEST(SqliteStore, AReplyTheLockedFileRefusesIsSpilledAndWrittenOnceTheLockIsGone) {
  SqliteBackend backend;
  auto store = backend.open(10'000);
  Sync sync(*store);
  ASSERT_FALSE(sync.accept(user_message("s1", "alice", "u1", "question", at(0))).first);

  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open_v2(backend.path().c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  std::unique_ptr<sqlite3, CloseDb> holder(raw);
  ASSERT_EQ(sqlite3_exec(holder.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  // Answered after the store's busy timeout (5 s): not an error, the reply is on disk.
  auto ec = sync.save(reply("s1", "r1", "the answer", at(1)));
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_GT(store->status().spilled_bytes, 0u);
  EXPECT_EQ(backend.scalar("SELECT count(*) FROM messages WHERE message_id = 'r1'"), "0");

  ASSERT_EQ(sqlite3_exec(holder.get(), "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  holder.reset();
  EXPECT_FALSE(sync.flush()) << "flush waits for the spilled reply";
  EXPECT_EQ(store->status().spilled_bytes, 0u);
  EXPECT_EQ(backend.scalar("SELECT content FROM messages WHERE message_id = 'r1'"), "the answer");
}

// Files of this process may grow by `bytes` at most while it lives (a disk
// that fills up): a write past that fails (EFBIG) instead of raising SIGXFSZ.
class FilesCapped {
 public:
  explicit FilesCapped(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &before_);
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit capped{bytes, before_.rlim_max};
    if (::setrlimit(RLIMIT_FSIZE, &capped) != 0) throw std::runtime_error("cannot cap file sizes");
  }
  ~FilesCapped() { ::setrlimit(RLIMIT_FSIZE, &before_); }

 private:
  rlimit before_{};
};

// Jobs that waited together share one transaction. When a later one fills the
// disk, SQLite rolls that whole transaction back: a reply that had gone in
// before it must not be lost with it, but wait in the spill journal.
TEST(SqliteStore, AReplyInABatchThatAFullDiskRolledBackIsSpilledNotLost) {
  SqliteBackend backend;
  auto store = backend.open(10'000);
  Sync sync(*store);
  ASSERT_FALSE(sync.accept(user_message("s1", "alice", "u1", "question", at(0))).first);
  ASSERT_FALSE(sync.flush());
  std::promise<error_code> small_saved, large_saved;
  {
    // Held, the store's thread waits in the first write; the two replies queue
    // behind it and run as one batch once it is let go.
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open_v2(backend.path().c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    std::unique_ptr<sqlite3, CloseDb> holder(raw);
    ASSERT_EQ(sqlite3_exec(holder.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
    std::promise<error_code> blocker_saved;
    store->save_assistant_message(reply("s1", "r0", "first", at(1)),
                                  [&](error_code ec) { blocker_saved.set_value(ec); });
    // The store's thread takes r0 into its write, alone.
    for (int i = 0; i < 400 && store->status().queued != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(store->status().queued, 0u);
    store->save_assistant_message(reply("s1", "r1", "the small answer", at(2)),
                                  [&](error_code ec) { small_saved.set_value(ec); });
    store->save_assistant_message(reply("s1", "r2", std::string(8u << 20, 'x'), at(3)),
                                  [&](error_code ec) { large_saved.set_value(ec); });
    FilesCapped full(fs::file_size(backend.path()) + (1u << 20));
    ASSERT_EQ(sqlite3_exec(holder.get(), "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
    holder.reset();
    blocker_saved.get_future().wait();
    EXPECT_FALSE(small_saved.get_future().get()) << "r1 must be kept: written, or in the journal";
    large_saved.get_future().wait();
  }
  EXPECT_FALSE(sync.flush());
  EXPECT_EQ(backend.scalar("SELECT content FROM messages WHERE message_id = 'r1'"), "the small answer");
}

TEST(SqliteStore, AnUnusablePathFailsTheStart) {
  config::StoreConfig cfg;
  cfg.path = "/dev/null/not-a-directory/chat.db";
  EXPECT_THROW(SqliteStore{cfg}, std::runtime_error);
}

}  // namespace
}  // namespace chat::store::test
