// ReplayLog: what a worker keeps of the chunks it published, and what a pod
// that asks again gets back.

#include "worker/replay_log.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace chat::worker {
namespace {

using namespace std::chrono_literals;
using Payloads = std::vector<std::string>;

constexpr auto kLongRetention = std::chrono::hours(1);
constexpr std::size_t kNoByteBound = 1 << 30;

Payloads replayed(ReplayLog& log, const std::string& session, const std::string& message = "") {
  Payloads out;
  log.replay(session, message, [&](const std::string& p) { out.push_back(p); });
  return out;
}

// A reply of `chunks` payloads "<message>:<i>", the last one final.
void record_reply(ReplayLog& log, const std::string& session, const std::string& message, int chunks,
                  bool broadcast = false) {
  for (int i = 0; i < chunks; ++i) log.record(session, message, message + ":" + std::to_string(i), broadcast);
}

// Retention is measured on the steady clock; waits (bounded) until `done`.
template <class Done>
bool eventually(Done done, std::chrono::milliseconds limit = 10s) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST(ReplayLog, ARunningReplyIsReplayedInChunkOrder) {
  ReplayLog log(kLongRetention, kNoByteBound);
  record_reply(log, "s1", "m1", 3);
  EXPECT_EQ(replayed(log, "s1"), (Payloads{"m1:0", "m1:1", "m1:2"}));
}

TEST(ReplayLog, OnlyTheAskedSessionIsReplayed) {
  ReplayLog log(kLongRetention, kNoByteBound);
  record_reply(log, "s1", "m1", 1);
  record_reply(log, "s2", "m2", 1);
  EXPECT_EQ(replayed(log, "s2"), (Payloads{"m2:0"}));
  EXPECT_TRUE(replayed(log, "s3").empty());
}

TEST(ReplayLog, InterleavedRunningRepliesAreEachReplayedInChunkOrder) {
  ReplayLog log(kLongRetention, kNoByteBound);
  log.record("s1", "m1", "m1:0", false);
  log.record("s1", "m2", "m2:0", false);
  log.record("s1", "m1", "m1:1", false);
  log.record("s1", "m2", "m2:1", false);
  auto all = replayed(log, "s1");
  auto of = [&](const std::string& message) {
    Payloads out;
    for (const auto& p : all)
      if (p.starts_with(message + ":")) out.push_back(p);
    return out;
  };
  EXPECT_EQ(all.size(), 4u);
  EXPECT_EQ(of("m1"), (Payloads{"m1:0", "m1:1"}));
  EXPECT_EQ(of("m2"), (Payloads{"m2:0", "m2:1"}));
}

TEST(ReplayLog, AFinishedReplyThatOnlyWentToPodsIsNotPartOfTheSessionReplay) {
  ReplayLog log(kLongRetention, kNoByteBound);
  record_reply(log, "s1", "m1", 2, /*broadcast=*/false);
  log.finish("s1", "m1");
  record_reply(log, "s1", "m2", 1);
  EXPECT_EQ(replayed(log, "s1"), (Payloads{"m2:0"}));
}

TEST(ReplayLog, AFinishedReplyThatWentToTheBroadcastIsPartOfTheSessionReplay) {
  ReplayLog log(kLongRetention, kNoByteBound);
  record_reply(log, "s1", "m1", 2, /*broadcast=*/true);
  log.finish("s1", "m1");
  EXPECT_EQ(replayed(log, "s1"), (Payloads{"m1:0", "m1:1"}));
}

TEST(ReplayLog, AFinishedReplyThatWentPartlyToTheBroadcastIsPartOfTheSessionReplay) {
  ReplayLog log(kLongRetention, kNoByteBound);
  log.record("s1", "m1", "m1:0", /*broadcast=*/true);
  log.record("s1", "m1", "m1:1", /*broadcast=*/false);
  log.finish("s1", "m1");
  EXPECT_EQ(replayed(log, "s1"), (Payloads{"m1:0", "m1:1"}));
}

TEST(ReplayLog, AMessageIdGivesThatReplyEvenWhenItFinishedOnPods) {
  ReplayLog log(kLongRetention, kNoByteBound);
  record_reply(log, "s1", "m1", 2, /*broadcast=*/false);
  log.finish("s1", "m1");
  record_reply(log, "s1", "m2", 1);
  EXPECT_EQ(replayed(log, "s1", "m1"), (Payloads{"m1:0", "m1:1"}));
}

TEST(ReplayLog, AMessageIdGivesOnlyThatReply) {
  ReplayLog log(kLongRetention, kNoByteBound);
  record_reply(log, "s1", "m1", 1);
  record_reply(log, "s1", "m2", 2);
  EXPECT_EQ(replayed(log, "s1", "m2"), (Payloads{"m2:0", "m2:1"}));
  EXPECT_TRUE(replayed(log, "s1", "m3").empty());
}

TEST(ReplayLog, AFinishedReplyIsKeptForTheRetentionThenDropped) {
  constexpr auto retention = 300ms;
  ReplayLog log(retention, kNoByteBound);
  record_reply(log, "s1", "m1", 2, /*broadcast=*/true);
  auto finished_at = std::chrono::steady_clock::now();
  log.finish("s1", "m1");
  auto young = replayed(log, "s1", "m1");
  // Only claim "still kept" when the machine was quick enough to ask in time.
  if (std::chrono::steady_clock::now() - finished_at < retention) {
    EXPECT_EQ(young, (Payloads{"m1:0", "m1:1"}));
  }
  EXPECT_TRUE(eventually([&] { return replayed(log, "s1", "m1").empty(); }));
  EXPECT_TRUE(replayed(log, "s1").empty());
}

TEST(ReplayLog, RetentionDropsTheReplyThatFinishedFirst) {
  constexpr auto retention = 1s;
  ReplayLog log(retention, kNoByteBound);
  record_reply(log, "s1", "m1", 1, true);
  record_reply(log, "s1", "m2", 1, true);
  log.finish("s1", "m1");
  auto m1_finished = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return std::chrono::steady_clock::now() - m1_finished >= retention / 2; }));
  auto m2_finished = std::chrono::steady_clock::now();
  log.finish("s1", "m2");

  ASSERT_TRUE(eventually([&] { return replayed(log, "s1", "m1").empty(); }));
  auto m2 = replayed(log, "s1", "m2");
  if (std::chrono::steady_clock::now() - m2_finished < retention) {
    EXPECT_EQ(m2, (Payloads{"m2:0"}));
  }
}

TEST(ReplayLog, ARunningReplyOutlivesTheRetention) {
  ReplayLog log(50ms, kNoByteBound);
  record_reply(log, "s1", "running", 1);
  record_reply(log, "s1", "done", 1, /*broadcast=*/true);
  log.finish("s1", "done");
  // Once the finished reply has aged out, the older running one is still there.
  ASSERT_TRUE(eventually([&] { return replayed(log, "s1", "done").empty(); }));
  EXPECT_EQ(replayed(log, "s1"), (Payloads{"running:0"}));
}

TEST(ReplayLog, TheByteBoundDropsTheReplyThatFinishedFirst) {
  // Every payload here is 4 bytes ("mN:i"); the bound holds three of them.
  ReplayLog log(kLongRetention, 12);
  record_reply(log, "s1", "m1", 1, true);
  record_reply(log, "s1", "m2", 1, true);
  record_reply(log, "s1", "m3", 1, true);
  // m2 finishes before m1, although it started later.
  log.finish("s1", "m2");
  log.finish("s1", "m1");
  log.finish("s1", "m3");
  ASSERT_EQ(replayed(log, "s1"), (Payloads{"m1:0", "m2:0", "m3:0"}));

  record_reply(log, "s1", "m4", 1, true);
  log.finish("s1", "m4");  // 16 bytes now: one reply has to go
  EXPECT_TRUE(replayed(log, "s1", "m2").empty());
  EXPECT_EQ(replayed(log, "s1"), (Payloads{"m1:0", "m3:0", "m4:0"}));
}

TEST(ReplayLog, TheByteBoundNeverDropsARunningReply) {
  ReplayLog log(kLongRetention, 8);
  record_reply(log, "s1", "m1", 3);  // 12 bytes, running: over the bound on its own
  record_reply(log, "s1", "m2", 1, true);
  log.finish("s1", "m2");
  EXPECT_TRUE(replayed(log, "s1", "m2").empty());
  EXPECT_EQ(replayed(log, "s1"), (Payloads{"m1:0", "m1:1", "m1:2"}));
}

TEST(ReplayLog, ADroppedReplyFreesItsBytes) {
  ReplayLog log(kLongRetention, 8);
  record_reply(log, "s1", "m1", 2, true);  // 8 bytes: fits
  log.finish("s1", "m1");
  record_reply(log, "s1", "m2", 2, true);  // 16 bytes: m1 has to go when m2 finishes
  log.finish("s1", "m2");
  EXPECT_TRUE(replayed(log, "s1", "m1").empty());
  // Back at 8 bytes, so m2 fits and stays.
  EXPECT_EQ(replayed(log, "s1", "m2"), (Payloads{"m2:0", "m2:1"}));
}

}  // namespace
}  // namespace chat::worker
