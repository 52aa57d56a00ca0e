// The MessageStore contract for finished replies that find the store's queue
// full: they are spilled to disk and written later, never refused, including
// across a restart of the store (see store_conformance.hpp).

#include <future>
#include <latch>
#include <thread>

#include "store/spill_journal.hpp"
#include "store/store_conformance.hpp"

namespace chat::store::test {
namespace {

constexpr std::size_t kLimit = 3;

// Parks every store thread in a callback and fills the queue behind them with
// flushes, so that the next call finds no room. Its end releases the threads.
class FullQueue {
 public:
  FullQueue(MessageStore& store, unsigned threads) : released_(release_.get_future().share()), parked_(threads) {
    for (unsigned i = 0; i < threads; ++i) {
      store.session_owner("any", [this, released = released_](error_code, std::optional<std::string>) {
        parked_.count_down();
        released.wait();
      });
    }
    parked_.wait();
    for (std::size_t i = 0; i < kLimit; ++i) store.flush([flushed = flushed_](error_code) { flushed->count_down(); });
  }
  ~FullQueue() { release(); }
  FullQueue(const FullQueue&) = delete;
  FullQueue& operator=(const FullQueue&) = delete;

  void release() {
    if (!released_by_us_) release_.set_value();
    released_by_us_ = true;
  }
  // Releases the threads and waits until the flushes that filled the queue are done.
  void drain() {
    release();
    flushed_->wait();
  }

 private:
  std::promise<void> release_;
  std::shared_future<void> released_;
  std::latch parked_;  // a member: count_down() may still touch it after wait() returned
  bool released_by_us_ = false;
  // Shared: the store may run these callbacks after this object is gone.
  std::shared_ptr<std::latch> flushed_ = std::make_shared<std::latch>(kLimit);
};

// Saves `m` and returns what its callback said, which must come before the call returns.
error_code save_at_once(MessageStore& store, AssistantMessage m) {
  std::optional<error_code> answer;
  store.save_assistant_message(std::move(m), [&](error_code ec) { answer = ec; });
  if (!answer) ADD_FAILURE() << "a spilled reply must be answered before the call returns";
  return answer.value_or(make_error_code(Errc::overloaded));
}

std::string count_replies(Backend& backend) {
  return backend.scalar("SELECT count(*) FROM messages WHERE role = 'assistant'");
}

TEST_P(StoreConformance, RepliesThatFindTheQueueFullAreSpilledAndStoredNotRefused) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "question", at(0))).first);
  ASSERT_FALSE(sync().save(reply("s1", "kept", "first copy", at(1))));
  auto small = backend_->open(kLimit);
  constexpr int kReplies = 50;
  {
    FullQueue full(*small, backend_->threads());
    for (int i = 0; i < kReplies; ++i) {
      auto ec = save_at_once(*small, reply("s1", "r" + std::to_string(i), "spilled " + std::to_string(i), at(10 + i)));
      EXPECT_FALSE(ec) << ec.message();
    }
    // Spilled copies of stored or spilled replies change nothing: the first write wins.
    EXPECT_FALSE(save_at_once(*small, reply("s1", "kept", "second copy", at(100))));
    EXPECT_FALSE(save_at_once(*small, reply("s1", "r7", "second copy", at(101))));

    // Everything else still fails fast.
    std::optional<error_code> owner_answer;
    small->session_owner("s1", [&](error_code ec, std::optional<std::string>) { owner_answer = ec; });
    EXPECT_EQ(owner_answer, make_error_code(Errc::overloaded));
    EXPECT_GT(small->status().spilled_bytes, 0u) << "what waits on disk shows";
    full.drain();
  }
  EXPECT_FALSE(Sync(*small).flush()) << "flush waits for the spilled replies";
  EXPECT_EQ(small->status().spilled_bytes, 0u);
  EXPECT_EQ(count_replies(*backend_), std::to_string(kReplies + 1));
  EXPECT_EQ(backend_->scalar("SELECT content FROM messages WHERE message_id = 'kept'"), "first copy");
  EXPECT_EQ(backend_->scalar("SELECT content FROM messages WHERE message_id = 'r7'"), "spilled 7");
  EXPECT_EQ(backend_->scalar("SELECT token_count FROM messages WHERE message_id = 'r49'"), "7");
  EXPECT_TRUE(spill_files(backend_->spill_dir()).empty());
}

TEST_P(StoreConformance, SpilledRepliesAreStoredByTheNextStoreAfterARestart) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "question", at(0))).first);
  close_store();
  constexpr int kReplies = 30;
  auto small = backend_->open(kLimit);
  {
    FullQueue full(*small, backend_->threads());
    for (int i = 0; i < kReplies; ++i)
      EXPECT_FALSE(save_at_once(*small, reply("s1", "r" + std::to_string(i), "spilled", at(10 + i))));
  }
  small.reset();  // what it has not written yet stays in the journal

  EXPECT_FALSE(sync().flush());  // a new store on the same database
  EXPECT_EQ(count_replies(*backend_), std::to_string(kReplies));
  EXPECT_TRUE(spill_files(backend_->spill_dir()).empty());
}

TEST_P(StoreConformance, AJournalLeftByAStoreThatDiedIsWrittenAtStartUp) {
  ASSERT_FALSE(sync().accept(user_message("s1", "alice", "u1", "question", at(0))).first);
  close_store();
  constexpr int kReplies = 10;
  {
    SpillJournal left_behind(backend_->spill_dir());
    for (int i = 0; i < kReplies; ++i)
      ASSERT_FALSE(left_behind.append(reply("s1", "r" + std::to_string(i), "from the journal", at(10 + i))));
    ASSERT_FALSE(left_behind.append(reply("deleted-meanwhile", "orphan", "no session", at(50))));
  }
  ASSERT_FALSE(spill_files(backend_->spill_dir()).empty());

  EXPECT_FALSE(sync().flush());
  EXPECT_EQ(count_replies(*backend_), std::to_string(kReplies));
  auto [ec, page] = sync().page("s1", "alice", 100);
  ASSERT_FALSE(ec);
  ASSERT_EQ(page.messages.size(), kReplies + 1u);
  EXPECT_EQ(page.messages.back().content, "from the journal");
  EXPECT_TRUE(spill_files(backend_->spill_dir()).empty());
}

}  // namespace
}  // namespace chat::store::test
