#include "hub/session_shard.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "hub/recording_sink.hpp"

namespace chat::hub {
namespace {

using namespace std::chrono_literals;

protocol::ResponseChunk chunk(std::string session, std::string message, std::uint32_t id, bool final = false) {
  protocol::ResponseChunk c;
  c.session_id = std::move(session);
  c.message_id = std::move(message);
  c.chunk_id = id;
  c.chunk = "t" + std::to_string(id) + " ";
  c.is_final = final;
  c.timestamp = "2026-11-29T00:00:00Z";
  if (final) c.metadata = protocol::ChunkMetadata{"demo-1", 3, "stop"};
  return c;
}

// A shard on a clock the test moves, with what it hands on recorded.
struct ShardTest : ::testing::Test {
  static HubOptions test_options() {
    HubOptions o;
    o.buffer.missing_chunk_timeout = 5s;
    o.buffer.max_age = 60s;
    o.late_join_window = 30s;
    o.replay_window = 120s;
    return o;
  }
  // Options the buffers take at construction (their limits) come through here.
  explicit ShardTest(HubOptions o = test_options()) : options(std::move(o)) {}

  SteadyTime now = std::chrono::steady_clock::now();
  HubOptions options;
  std::vector<buffer::FinishedMessage> finished;
  std::vector<std::pair<std::string, std::string>> replays;
  std::vector<std::pair<std::string, sse::ResumeCursor>> catch_ups;  // (stream id, cursor)
  std::uint64_t bus_reconnects = 0;
  SessionShard shard{options,
                     ShardHandlers{[this](buffer::FinishedMessage m) { finished.push_back(std::move(m)); },
                                   [this](const std::string& s, const std::string& m) { replays.emplace_back(s, m); },
                                   [this](const std::string&, const std::string& stream, const sse::ResumeCursor& c) {
                                     catch_ups.emplace_back(stream, c);
                                   },
                                   [this] { return bus_reconnects; }},
                     [this] { return now; }};

  // What the store was handed for one reply: its first copy (nullptr: none), and how often.
  const buffer::FinishedMessage* stored(const std::string& message_id) const {
    auto it = std::find_if(finished.begin(), finished.end(), [&](const auto& m) { return m.message_id == message_id; });
    return it == finished.end() ? nullptr : &*it;
  }
  std::ptrdiff_t times_stored(const std::string& message_id) const {
    return std::count_if(finished.begin(), finished.end(), [&](const auto& m) { return m.message_id == message_id; });
  }

  std::shared_ptr<RecordingSink> stream(const std::string& session, std::optional<sse::ResumeCursor> cursor = {}) {
    auto s = std::make_shared<RecordingSink>("conn_" + std::to_string(++streams), session);
    shard.attach(s, std::move(cursor));
    return s;
  }
  int streams = 0;
};

using Events = std::vector<std::string>;

TEST_F(ShardTest, ChunksReachEveryStreamOfTheSessionInOrderOnce) {
  auto a = stream("s1");
  auto b = stream("s1");
  auto other = stream("s2");
  shard.on_chunk(chunk("s1", "m1", 1), false);
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 0), false);  // a duplicate
  shard.on_chunk(chunk("s1", "m1", 2, true), false);
  for (const auto& s : {a, b}) {
    EXPECT_EQ(s->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2"}));
    EXPECT_EQ(s->events(), (Events{"chunk", "chunk", "chunk", "message_complete"}));
  }
  EXPECT_TRUE(other->events().empty());
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].content, "t0 t1 t2 ");
  EXPECT_EQ(finished[0].status, buffer::MessageStatus::complete);
}

TEST_F(ShardTest, AllStreamsShareOneEncodedFrame) {
  auto a = stream("s1");
  auto b = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  ASSERT_EQ(a->frames().size(), 1u);
  EXPECT_EQ(a->frames()[0].get(), b->frames()[0].get());
}

TEST_F(ShardTest, TheFirstStreamOfASessionAsksForItsRunningReplies) {
  stream("s1");
  stream("s1");
  EXPECT_EQ(replays, (std::vector<std::pair<std::string, std::string>>{{"s1", ""}}));
}

TEST_F(ShardTest, BroadcastChunksAreBufferedOnlyForSessionsHeldHere) {
  shard.on_chunk(chunk("s9", "m9", 0), true);
  EXPECT_EQ(shard.gauges().buffers.load(), 0u);
  EXPECT_EQ(shard.gauges().broadcasts_kept.load(), 1u);
  shard.expect("s8", "m8");  // accepted here: its broadcast chunks are kept
  shard.on_chunk(chunk("s8", "m8", 0, true), true);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].message_id, "m8");
}

TEST_F(ShardTest, ALateStreamGetsTheRunningReplyFromChunkZero) {
  shard.expect("s1", "m1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 1), false);
  auto late = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 2, true), false);
  EXPECT_EQ(late->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2"}));
}

TEST_F(ShardTest, AResumedStreamContinuesAfterItsCursorWithoutRepeats) {
  auto first = stream("s1");
  for (std::uint32_t i = 0; i < 3; ++i) shard.on_chunk(chunk("s1", "m1", i), false);
  auto resumed = stream("s1", sse::ResumeCursor{"m1", 1});
  shard.on_chunk(chunk("s1", "m1", 3, true), false);
  EXPECT_EQ(resumed->chunk_ids(), (Events{"m1:2", "m1:3"}));
}

TEST_F(ShardTest, ACursorPastTheResumeWindowGetsAReset) {
  stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0, true), false);
  now += 121s;
  shard.cleanup();
  auto late = stream("s1", sse::ResumeCursor{"m1", 0});
  ASSERT_FALSE(late->events().empty());
  EXPECT_EQ(late->events().front(), "reset");
  EXPECT_NE(late->frames().front()->find("resume_window_passed"), std::string::npos);
}

TEST_F(ShardTest, TheResumeWindowEndsOnTimeNotAtTheNextCleanup) {
  stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0, true), false);
  now += 121s;
  auto late = stream("s1", sse::ResumeCursor{"m1", 0});
  ASSERT_FALSE(late->events().empty());
  EXPECT_EQ(late->events().front(), "reset");
}

TEST_F(ShardTest, AMissingChunkIsGivenUpAfterTheTimeoutAndTheRestStreams) {
  auto s = stream("s1");
  shard.expect("s1", "m1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 2, true), false);
  now += 4s;
  shard.check_gaps();
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0"}));
  now += 2s;
  shard.check_gaps();
  EXPECT_EQ(s->events(), (Events{"chunk", "delayed", "error", "chunk", "message_complete"}));
  EXPECT_NE(s->frames()[2]->find("chunks_missing"), std::string::npos);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].status, buffer::MessageStatus::incomplete);
  EXPECT_EQ(finished[0].missing_chunks, (std::vector<std::uint32_t>{1}));
}

TEST_F(ShardTest, AStalledGapAsksTheWorkersForThatReply) {
  stream("s1");
  replays.clear();
  shard.on_chunk(chunk("s1", "m1", 1), false);
  now += options.replay_after;
  shard.check_gaps();
  EXPECT_EQ(replays, (std::vector<std::pair<std::string, std::string>>{{"s1", "m1"}}));
}

// Chunks sent while the bus was away are lost: a reply silent since then is
// asked about at the next check, not after its back-off.
TEST_F(ShardTest, AfterTheBusReconnectsASilentReplyIsAskedAboutAtOnce) {
  stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  replays.clear();
  now += options.replay_after;
  shard.check_gaps();
  const std::vector<std::pair<std::string, std::string>> asked{{"s1", "m1"}};
  EXPECT_EQ(replays, asked);
  replays.clear();
  now += options.replay_after;
  shard.check_gaps();
  EXPECT_TRUE(replays.empty()) << "a silent reply's asks back off";

  ++bus_reconnects;
  shard.check_gaps();
  EXPECT_EQ(replays, asked);
  replays.clear();
  shard.check_gaps();
  EXPECT_TRUE(replays.empty()) << "once per reconnect";
}

TEST_F(ShardTest, OwedCountsWhatAStreamOrTheStoreWaitsFor) {
  EXPECT_EQ(shard.owed(), 0u);
  shard.expect("s1", "m1");
  EXPECT_EQ(shard.owed(), 1u);
  shard.on_chunk(chunk("s1", "m1", 0, true), false);
  EXPECT_EQ(shard.owed(), 0u);
  // Another pod's reply, kept while a stream here watched it.
  auto s = stream("s2");
  shard.on_chunk(chunk("s2", "m2", 0), false);
  EXPECT_EQ(shard.owed(), 1u);
  shard.detach(s);
  EXPECT_EQ(shard.owed(), 0u) << "nobody here waits for it any more";
}

// A client gone at once: its stream's detach can reach the shard before its
// attach (Pod::open_stream starts the stream, then attaches it). The attach
// that comes after must not hold it.
TEST_F(ShardTest, AStreamThatEndedBeforeItsAttachIsNotHeld) {
  auto s = std::make_shared<RecordingSink>("conn_gone", "s1");
  s->end();
  shard.detach(s);
  shard.attach(s, std::nullopt);
  EXPECT_EQ(shard.gauges().streams.load(), 0u);
  EXPECT_EQ(shard.gauges().sessions.load(), 0u);
  shard.expect("s1", "m1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  EXPECT_TRUE(s->frames().empty()) << "nothing sent to a stream that ended";
}

TEST_F(ShardTest, EndingASessionClosesItsStreamsAndReturnsItsRunningReplies) {
  auto s = stream("s1");
  shard.expect("s1", "m1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  EXPECT_EQ(shard.end_session("s1"), (std::vector<std::string>{"m1"}));
  EXPECT_TRUE(s->closed());
  EXPECT_EQ(s->events().back(), "reset");
  shard.on_chunk(chunk("s1", "m1", 1, true), false);  // a late chunk stores nothing
  EXPECT_TRUE(finished.empty());
}

// A stream whose owner was checked before the DELETE reaches the shard after
// it (through the store and the limiter): the id may be someone else's now.
TEST_F(ShardTest, AStreamCheckedBeforeItsSessionEndedIsClosedWhenItAttachesAfter) {
  const auto checked = now;
  now += 1ms;
  shard.end_session("s1");
  auto stale = std::make_shared<RecordingSink>("conn_stale", "s1");
  shard.attach(stale, std::nullopt, checked);
  EXPECT_TRUE(stale->closed());
  ASSERT_EQ(stale->events(), (Events{"reset"}));
  EXPECT_NE(stale->frames()[0]->find("session_deleted"), std::string::npos) << *stale->frames()[0];
  now += 1ms;
  auto fresh = std::make_shared<RecordingSink>("conn_fresh", "s1");
  shard.attach(fresh, std::nullopt, now);  // the session's next owner, checked after
  EXPECT_FALSE(fresh->closed());
  shard.expect("s1", "m2", "u2");
  shard.on_chunk(chunk("s1", "m2", 0), false);
  EXPECT_TRUE(stale->chunk_ids().empty());
  EXPECT_EQ(fresh->chunk_ids(), (Events{"m2:0"}));
}

TEST_F(ShardTest, ForgettingAnExpectedReplyLeavesNothingOwed) {
  shard.expect("s1", "m1");
  shard.forget("s1", "m1");
  EXPECT_EQ(shard.owed(), 0u);
  EXPECT_EQ(shard.gauges().buffers.load(), 0u);
}

TEST_F(ShardTest, AfterCloseAllNewStreamsAreClosedAtOnce) {
  auto s = stream("s1");
  shard.close_all([] { return sse::retry_frame(1s); });
  EXPECT_TRUE(s->closed());
  EXPECT_TRUE(stream("s1")->closed());
}

TEST_F(ShardTest, GaugesCountStreamsSessionsAndBuffers) {
  auto a = stream("s1");
  auto b = stream("s1");
  stream("s2");
  shard.expect("s3", "m3");
  EXPECT_EQ(shard.gauges().streams.load(), 3u);
  EXPECT_EQ(shard.gauges().sessions.load(), 2u);
  EXPECT_EQ(shard.gauges().buffers.load(), 1u);
  shard.detach(a);
  shard.detach(b);
  EXPECT_EQ(shard.gauges().streams.load(), 1u);
  EXPECT_EQ(shard.gauges().sessions.load(), 1u);
}

TEST_F(ShardTest, HeartbeatsReachEveryStreamOnceARound) {
  std::vector<std::shared_ptr<RecordingSink>> streams;
  for (int i = 0; i < 100; ++i) streams.push_back(stream("s" + std::to_string(i)));
  std::size_t pinged_by_first_call = 0;
  for (std::size_t call = 0; call < SessionShard::kHeartbeatSlices; ++call) {
    shard.heartbeat();
    if (call == 0)
      for (auto& s : streams) pinged_by_first_call += s->events().size();
  }
  for (auto& s : streams) EXPECT_EQ(s->events(), (Events{"ping"})) << s->id();
  // A call pings a slice, not every stream at once.
  EXPECT_LT(pinged_by_first_call, streams.size() / 2);
  for (std::size_t call = 0; call < SessionShard::kHeartbeatSlices; ++call) shard.heartbeat();
  for (auto& s : streams) EXPECT_EQ(s->events(), (Events{"ping", "ping"})) << s->id();
}

TEST_F(ShardTest, AStreamThatOpensJustAfterABroadcastReplyStartedGetsItFromChunkZero) {
  shard.on_chunk(chunk("s1", "m1", 0), true);
  shard.on_chunk(chunk("s1", "m1", 1), true);
  now += 2s;
  auto s = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 2, true), false);
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2"}));
}

TEST_F(ShardTest, KeptBroadcastsLeaveAfterTheirWindow) {
  shard.on_chunk(chunk("s1", "m1", 0), true);
  now += options.broadcast_window;
  auto s = stream("s1");
  EXPECT_TRUE(s->chunk_ids().empty());
}

TEST_F(ShardTest, AWatchedReplyThatWaitsIsAnnouncedOnceNotLeftSilent) {
  auto s = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 2), false);
  now += options.delay_notice_after;
  shard.check_gaps();
  shard.check_gaps();
  EXPECT_EQ(s->events(), (Events{"chunk", "delayed"}));
  EXPECT_NE(s->frames().back()->find("\"next_chunk_id\":1"), std::string::npos);
  shard.on_chunk(chunk("s1", "m1", 1), false);
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2"}));
}

protocol::ResponseChunk attempt(protocol::ResponseChunk c, std::uint32_t n) {
  c.attempt = n;
  return c;
}

TEST_F(ShardTest, ANewAttemptResetsTheReplyOnStreamsThatSawTheOldOne) {
  auto s = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 1), false);
  shard.on_chunk(attempt(chunk("s1", "m1", 0), 2), false);
  shard.on_chunk(attempt(chunk("s1", "m1", 1, true), 2), false);
  EXPECT_EQ(s->events(), (Events{"chunk", "chunk", "reset", "chunk", "chunk", "message_complete"}));
  EXPECT_NE(s->frames()[2]->find("\"message_id\":\"m1\""), std::string::npos);
  // A cursor does not say which attempt it came from: the reply starts over.
  auto late = stream("s1", sse::ResumeCursor{"m1", 0});
  EXPECT_EQ(late->events(), (Events{"reset", "chunk", "chunk", "message_complete"}));
  EXPECT_EQ(late->chunk_ids(), (Events{"m1:0", "m1:1"}));
}

struct LogShardTest : ShardTest {
  LogShardTest() { options.log_catch_up = true; }
};

TEST_F(LogShardTest, AStreamResumingAReplyThisPodNeverHadCatchesUpFromTheLog) {
  auto s = stream("s1", sse::ResumeCursor{"m1", 1});
  ASSERT_EQ(catch_ups.size(), 1u);
  EXPECT_EQ(catch_ups[0].second, (sse::ResumeCursor{"m1", 1}));
  EXPECT_TRUE(replays.empty()) << "the log answers, not the workers";
  shard.on_chunk(chunk("s1", "m2", 0), false);  // live while the log is read: held
  EXPECT_TRUE(s->chunk_ids().empty());
  std::vector<protocol::ResponseChunk> log;
  for (std::uint32_t i = 0; i < 4; ++i) log.push_back(chunk("s1", "m1", i, i == 3));
  log.push_back(chunk("s1", "m2", 0));
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, log);
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:2", "m1:3", "m2:0"}));
  // m2 began after the cursor's reply: the client may have had part of it, it starts over
  EXPECT_EQ(s->events(), (Events{"chunk", "chunk", "message_complete", "reset", "chunk"}));
  EXPECT_NE(s->frames()[3]->find("\"reason\":\"reply_resent\",\"message_id\":\"m2\""), std::string::npos);
  ASSERT_EQ(finished.size(), 1u) << "a finished reply read from the log is stored (first write wins)";
  EXPECT_EQ(finished[0].message_id, "m1");
  EXPECT_EQ(finished[0].content, "t0 t1 t2 t3 ");
  shard.on_chunk(chunk("s1", "m2", 1), false);
  EXPECT_EQ(s->chunk_ids().back(), "m2:1");
}

// m2 runs here when the stream comes back; it ends while the log is read, and
// the log (written after the live publish) has only its start. The stream is
// told m2 comes again from its start: it must get all of it, not only the
// chunks held while the log was read.
TEST_F(LogShardTest, AReplyRunningHereThatEndsWhileTheLogIsReadIsSentWhole) {
  shard.expect("s1", "m2");
  shard.on_chunk(chunk("s1", "m2", 0), false);
  shard.on_chunk(chunk("s1", "m2", 1), false);
  auto s = stream("s1", sse::ResumeCursor{"m1", 1});
  ASSERT_EQ(catch_ups.size(), 1u);
  shard.on_chunk(chunk("s1", "m2", 2, true), false);  // held
  shard.resume_from_log(
      "s1", catch_ups[0].first, catch_ups[0].second,
      std::vector{chunk("s1", "m1", 0), chunk("s1", "m1", 1, true), chunk("s1", "m2", 0), chunk("s1", "m2", 1)});
  EXPECT_EQ(s->chunk_ids(), (Events{"m2:0", "m2:1", "m2:2"}));
  EXPECT_EQ(s->events(), (Events{"message_complete", "reset", "chunk", "chunk", "chunk", "message_complete"}));
}

// The same when the log has nothing of m2 yet: m2 starts over after a reset.
TEST_F(LogShardTest, AReplyRunningHereThatEndsWhileTheLogIsReadIsSentWholeWhenTheLogHasNoneOfIt) {
  shard.expect("s1", "m2");
  shard.on_chunk(chunk("s1", "m2", 0), false);
  auto s = stream("s1", sse::ResumeCursor{"m1", 1});
  ASSERT_EQ(catch_ups.size(), 1u);
  shard.on_chunk(chunk("s1", "m2", 1, true), false);  // held
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second,
                        std::vector{chunk("s1", "m1", 0), chunk("s1", "m1", 1, true)});
  EXPECT_EQ(s->chunk_ids(), (Events{"m2:0", "m2:1"}));
  EXPECT_EQ(s->events(), (Events{"message_complete", "reset", "chunk", "chunk", "message_complete"}));
}

TEST_F(LogShardTest, AReplyThatStartsOverWhileTheLogIsReadIsResetBeforeItsNewAttempt) {
  auto s = stream("s1", sse::ResumeCursor{"m1", 0});
  ASSERT_EQ(catch_ups.size(), 1u);
  shard.on_chunk(chunk("s1", "m1", 1), false);  // attempt 1, held out of its turn
  shard.on_chunk(attempt(chunk("s1", "m1", 0), 2), false);
  shard.on_chunk(attempt(chunk("s1", "m1", 1), 2), false);
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, std::vector{chunk("s1", "m1", 0)});
  shard.on_chunk(attempt(chunk("s1", "m1", 2), 2), false);
  EXPECT_EQ(s->events(), (Events{"reset", "chunk", "chunk", "chunk"}));
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2"}));
}

TEST_F(LogShardTest, AReplyThatStartsOverTwiceWhileTheLogIsReadIsResetOnce) {
  auto s = stream("s1", sse::ResumeCursor{"m1", 0});
  ASSERT_EQ(catch_ups.size(), 1u);
  shard.on_chunk(chunk("s1", "m1", 1), false);
  shard.on_chunk(attempt(chunk("s1", "m1", 0), 2), false);
  shard.on_chunk(attempt(chunk("s1", "m1", 0), 3), false);
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, std::vector{chunk("s1", "m1", 0)});
  EXPECT_EQ(s->events(), (Events{"reset", "chunk"}));
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0"}));
}

TEST_F(LogShardTest, ANoticeMadeWhileTheLogIsReadReachesTheStreamOnce) {
  shard.expect("s1", "m2");
  shard.on_chunk(chunk("s1", "m2", 0), false);
  auto s = stream("s1", sse::ResumeCursor{"m1", 0});
  ASSERT_EQ(catch_ups.size(), 1u);
  now += options.delay_notice_after + 1s;
  shard.check_gaps();  // m2 waits: a delayed notice, kept in its backlog and held for the stream
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second,
                        std::vector{chunk("s1", "m1", 0), chunk("s1", "m1", 1, true), chunk("s1", "m2", 0)});
  const auto events = s->events();
  EXPECT_EQ(std::count(events.begin(), events.end(), "delayed"), 1) << ::testing::PrintToString(events);
}

TEST_F(LogShardTest, AResumeFromTheLogResendsFromTheirStartTheRepliesThatRanBesideTheCursorsOne) {
  // In the log: m0 (finished before m1 and m2 began), then m1 and m2 interleaved;
  // the client's cursor names m2:1, the last event it had.
  std::vector<protocol::ResponseChunk> log{chunk("s1", "m0", 0), chunk("s1", "m0", 1, true), chunk("s1", "m1", 0),
                                           chunk("s1", "m2", 0), chunk("s1", "m1", 1), chunk("s1", "m2", 1),
                                           chunk("s1", "m1", 2, true), chunk("s1", "m2", 2)};
  auto s = stream("s1", sse::ResumeCursor{"m2", 1});
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, log);
  EXPECT_EQ(s->events(), (Events{"reset", "chunk", "chunk", "chunk", "message_complete", "chunk"}));
  EXPECT_NE(s->frames()[0]->find("\"message_id\":\"m1\""), std::string::npos);
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2", "m2:2"}));
  shard.on_chunk(chunk("s1", "m2", 3, true), false);
  EXPECT_EQ(s->chunk_ids().back(), "m2:3");
}

TEST_F(LogShardTest, AnEarlierReplyStillRunningIsResentWholeNotContinuedBlind) {
  // m1's logged entries all precede m2's, but m1 still runs: its later chunks
  // (m1:2) reached the client's old pod live before the log had them. The
  // cursor (m2:0) cannot say how far the client got in m1, so m1 starts over.
  std::vector<protocol::ResponseChunk> log{chunk("s1", "m1", 0), chunk("s1", "m1", 1), chunk("s1", "m2", 0)};
  auto s = stream("s1", sse::ResumeCursor{"m2", 0});
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, log);
  shard.on_chunk(chunk("s1", "m1", 2), false);
  shard.on_chunk(chunk("s1", "m1", 3, true), false);
  ASSERT_FALSE(s->events().empty());
  EXPECT_EQ(s->events().front(), "reset");
  EXPECT_NE(s->frames()[0]->find("\"message_id\":\"m1\""), std::string::npos);
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2", "m1:3"}));
}

TEST_F(LogShardTest, AFinishedReplyThatEndedBeforeTheCursorsBeganIsNeverSentAgainButIsStored) {
  std::vector<protocol::ResponseChunk> log{chunk("s1", "m1", 0), chunk("s1", "m1", 1, true), chunk("s1", "m2", 0)};
  auto s = stream("s1", sse::ResumeCursor{"m2", 0});
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, log);
  // Its accepting pod may have died and the client's old pod with its end: stored (first write wins).
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].message_id, "m1");
  EXPECT_EQ(finished[0].content, "t0 t1 ");
  shard.on_chunk(chunk("s1", "m1", 1, true), false);  // a late copy, e.g. a workers' replay
  shard.on_chunk(chunk("s1", "m2", 1), false);
  EXPECT_EQ(s->chunk_ids(), (Events{"m2:1"}));
  auto events = s->events();
  EXPECT_EQ(std::count(events.begin(), events.end(), "reset"), 0);
}

// Another pod's reply this pod dropped unfinished (nobody here watched it any
// more) is not stored here: if its pod is gone, the copy a resume reads from
// the log is the one to store.
TEST_F(LogShardTest, AReplyDroppedHereUnstoredIsStoredWhenAResumeReadsItFromTheLog) {
  auto watcher = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.detach(watcher);
  now += options.buffer.max_age;
  shard.cleanup();
  ASSERT_EQ(shard.counters().buffers_abandoned.value(), 1u);
  ASSERT_TRUE(finished.empty());
  auto s = stream("s1", sse::ResumeCursor{"m0", 0});
  ASSERT_EQ(catch_ups.size(), 1u);
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second,
                        std::vector<protocol::ResponseChunk>{chunk("s1", "m0", 0, true), chunk("s1", "m1", 0),
                                                             chunk("s1", "m1", 1, true)});
  const auto* m1 = stored("m1");
  ASSERT_NE(m1, nullptr);
  EXPECT_EQ(m1->content, "t0 t1 ");
}

// Its frames go with its buffer: they neither hold reply memory for good nor
// reach a later stream as a reply that never ends.
TEST_F(ShardTest, AnotherPodsReplyNobodyWatchesAnyMoreLeavesNothingBehind) {
  auto watcher = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 1), false);
  shard.detach(watcher);
  ASSERT_GT(shard.gauges().reply_bytes.load(), 0u);
  now += options.buffer.max_age;
  shard.cleanup();
  ASSERT_EQ(shard.counters().buffers_abandoned.value(), 1u);
  EXPECT_EQ(shard.gauges().reply_bytes.load(), 0u);
  auto later = stream("s1");
  EXPECT_TRUE(later->chunk_ids().empty()) << "a later stream got the abandoned reply's chunks";
}

TEST_F(LogShardTest, AReplyStoredHereIsNotStoredAgainFromTheLog) {
  shard.expect("s1", "m1");
  shard.on_chunk(chunk("s1", "m1", 0, true), false);
  ASSERT_EQ(finished.size(), 1u);
  std::vector<protocol::ResponseChunk> log{chunk("s1", "m0", 0, true), chunk("s1", "m1", 0, true)};
  for (int resume = 0; resume < 2; ++resume) {
    auto s = stream("s1", sse::ResumeCursor{"m0", 0});
    shard.resume_from_log("s1", catch_ups.back().first, catch_ups.back().second, log);
  }
  EXPECT_EQ(times_stored("m1"), 1) << "stored when it finished here";
  EXPECT_EQ(times_stored("m0"), 1) << "stored from the log once, not on every resume";
}

// At the bound, another pod's reply is evicted here unstored: if that pod is
// gone, a resume that reads it from the log stores it.
struct CrowdedLogShardTest : ShardTest {
  CrowdedLogShardTest() : ShardTest([] {
    auto o = test_options();
    o.log_catch_up = true;
    o.buffer.max_buffers = 1;
    return o;
  }()) {}
};

TEST_F(CrowdedLogShardTest, AnotherPodsReplyEvictedHereIsStoredWhenAResumeReadsItFromTheLog) {
  auto watcher = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m2", 0), false);  // evicts m1
  EXPECT_EQ(watcher->events(), (Events{"chunk", "error", "message_complete", "chunk"}));
  EXPECT_TRUE(finished.empty());
  auto s = stream("s1", sse::ResumeCursor{"m0", 0});
  shard.resume_from_log("s1", catch_ups.back().first, catch_ups.back().second,
                        std::vector<protocol::ResponseChunk>{chunk("s1", "m0", 0, true), chunk("s1", "m1", 0),
                                                             chunk("s1", "m1", 1, true)});
  const auto* m1 = stored("m1");
  ASSERT_NE(m1, nullptr);
  EXPECT_EQ(m1->content, "t0 t1 ");
}

TEST_F(CrowdedLogShardTest, AnotherPodsReplyEndsAtOnceOnTheStreamsWhenTheShardHoldsOnlyRepliesAcceptedHere) {
  auto watcher = stream("s1");
  shard.expect("s1", "m1");
  shard.on_chunk(chunk("s1", "m2", 0), false);
  EXPECT_EQ(watcher->events(), (Events{"error", "message_complete"}));
  EXPECT_NE(watcher->frames()[0]->find("buffer_evicted"), std::string::npos);
  EXPECT_TRUE(finished.empty()) << "the pod that accepted m2 stores it";
  shard.on_chunk(chunk("s1", "m1", 0, true), false);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].message_id, "m1");
  EXPECT_EQ(finished[0].status, buffer::MessageStatus::complete);
}

// Its reply waited past BUFFER_MAX_AGE in the work queue; nobody watches the
// session, so the worker sends it only to the broadcast subject.
TEST_F(ShardTest, AReplyAcceptedHereThatComesAfterItsBufferWentIsStillStored) {
  shard.expect("s1", "m1");
  now += options.buffer.max_age;
  shard.cleanup();
  ASSERT_EQ(shard.gauges().buffers.load(), 0u);
  now += 10s;
  shard.on_chunk(chunk("s1", "m1", 0), true);
  shard.on_chunk(chunk("s1", "m1", 1, true), true);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].content, "t0 t1 ");
  EXPECT_EQ(finished[0].status, buffer::MessageStatus::complete);
}

TEST_F(ShardTest, ASilentReplyAcceptedHereThatTheLogHoldsWholeIsStoredWholeAndEndsOnce) {
  shard.expect("s1", "m1", "u1");
  now += options.buffer.max_age;
  shard.cleanup();  // nothing came here yet: its buffer goes, the reply is still this pod's
  ASSERT_TRUE(finished.empty());
  // Its chunks went elsewhere (a route not yet updated); a gap read finds it whole in the log.
  shard.fill_from_log({chunk("s1", "m1", 0), chunk("s1", "m1", 1, true)});
  ASSERT_EQ(times_stored("m1"), 1);
  EXPECT_EQ(stored("m1")->content, "t0 t1 ");
  EXPECT_EQ(stored("m1")->status, buffer::MessageStatus::complete);
  now += options.buffer.max_age;
  shard.cleanup();
  EXPECT_EQ(times_stored("m1"), 1) << "not given up later as silent (an empty row first would win)";
}

TEST_F(LogShardTest, AStreamThatHoldsTooMuchWhileTheLogIsReadIsClosedAndTheLateAnswerIgnored) {
  options.max_backlog_frames = 4;
  auto s = stream("s1", sse::ResumeCursor{"m1", 1});
  auto other = stream("s1");
  for (std::uint32_t i = 0; i < 5; ++i) shard.on_chunk(chunk("s1", "m2", i), false);
  EXPECT_TRUE(s->closed());
  EXPECT_EQ(shard.gauges().catch_ups_cut.value(), 1u);
  EXPECT_EQ(other->chunk_ids(), (Events{"m2:0", "m2:1", "m2:2", "m2:3", "m2:4"})) << "the others stream on";
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second,
                        std::vector<protocol::ResponseChunk>{chunk("s1", "m1", 0), chunk("s1", "m1", 1)});
  EXPECT_EQ(shard.gauges().resumed_from_log.value(), 0u) << "a stream on its way out is not served";
  shard.detach(s);
  EXPECT_EQ(shard.gauges().streams.load(), 1u);
}

TEST_F(ShardTest, AStreamBackOnTheSamePodGetsAnInterleavedReplyAgainFromItsStart) {
  auto first = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m2", 0), false);
  shard.on_chunk(chunk("s1", "m1", 1), false);
  shard.detach(first);
  auto again = stream("s1", sse::ResumeCursor{"m2", 0});
  shard.on_chunk(chunk("s1", "m1", 2, true), false);
  EXPECT_EQ(again->events(), (Events{"reset", "chunk", "chunk", "chunk", "message_complete"}));
  EXPECT_EQ(again->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2"}));
}

// Without a chunk log (core NATS): the cursor names a reply this pod never
// had, and m2 runs here. The client may have seen part of m2 on its old pod,
// so m2 goes from its start after a reset, once, and its next chunks follow
// with no second reset and no gap.
TEST_F(ShardTest, AResumeWhoseReplyThisPodNeverHadGetsTheRunningReplyWholeAfterOneReset) {
  shard.expect("s1", "m2");
  shard.on_chunk(chunk("s1", "m2", 0), false);
  shard.on_chunk(chunk("s1", "m2", 1), false);
  auto s = stream("s1", sse::ResumeCursor{"m1", 3});
  shard.on_chunk(chunk("s1", "m2", 2), false);
  shard.on_chunk(chunk("s1", "m2", 3, true), false);
  EXPECT_EQ(s->events(), (Events{"reset", "chunk", "chunk", "chunk", "chunk", "message_complete"}));
  EXPECT_EQ(s->chunk_ids(), (Events{"m2:0", "m2:1", "m2:2", "m2:3"}));
}

// The client saw attempt 1 up to chunk 2, was away while the reply started
// over here, and comes back: the backlog holds attempt 2 only, and the cursor
// does not say which attempt it saw. The reply starts over for it after a
// reset, rather than attempt 2 continuing attempt 1's text.
TEST_F(ShardTest, AResumeIntoAReplyThatStartedOverHereGetsItFromItsStartAfterAReset) {
  shard.expect("s1", "m1");
  auto first = stream("s1");
  for (std::uint32_t i = 0; i < 3; ++i) shard.on_chunk(chunk("s1", "m1", i), false);
  shard.detach(first);
  shard.on_chunk(attempt(chunk("s1", "m1", 0), 2), false);
  shard.on_chunk(attempt(chunk("s1", "m1", 1), 2), false);
  auto again = stream("s1", sse::ResumeCursor{"m1", 2});
  shard.on_chunk(attempt(chunk("s1", "m1", 2), 2), false);
  shard.on_chunk(attempt(chunk("s1", "m1", 3), 2), false);
  EXPECT_EQ(again->events(), (Events{"reset", "chunk", "chunk", "chunk", "chunk"}));
  EXPECT_NE(again->frames()[0]->find("\"reason\":\"reply_restarted\""), std::string::npos);
  EXPECT_EQ(again->chunk_ids(), (Events{"m1:0", "m1:1", "m1:2", "m1:3"}));
}

// A resume from this pod's backlog sends what came after the cursor: a notice
// the client had before it (a gap given up, a delay) does not come again.
TEST_F(ShardTest, AResumeFromTheBacklogSendsNoNoticeThatCameBeforeTheCursor) {
  auto first = stream("s1");
  shard.expect("s1", "m1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 2), false);
  now += 6s;
  shard.check_gaps();  // chunk 1 given up: delayed, then chunks_missing
  shard.on_chunk(chunk("s1", "m1", 3), false);
  ASSERT_EQ(first->events(), (Events{"chunk", "delayed", "error", "chunk", "chunk"}));
  shard.detach(first);
  auto again = stream("s1", sse::ResumeCursor{"m1", 2});
  shard.on_chunk(chunk("s1", "m1", 4, true), false);
  EXPECT_EQ(again->events(), (Events{"chunk", "chunk", "message_complete"}));
  EXPECT_EQ(again->chunk_ids(), (Events{"m1:3", "m1:4"}));
}

TEST_F(LogShardTest, ACursorTheLogNoLongerHasGetsAReset) {
  auto s = stream("s1", sse::ResumeCursor{"gone", 5});
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, std::vector<protocol::ResponseChunk>{});
  ASSERT_FALSE(s->events().empty());
  EXPECT_EQ(s->events().front(), "reset");
  EXPECT_NE(s->frames().front()->find("resume_window_passed"), std::string::npos);
}

TEST_F(LogShardTest, AFailedLogReadSaysSoInsteadOfGoingSilent) {
  auto s = stream("s1", sse::ResumeCursor{"m1", 0});
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, std::nullopt);
  ASSERT_FALSE(s->frames().empty());
  EXPECT_NE(s->frames().front()->find("resume_unavailable"), std::string::npos);
}

// Found by a chaos run: the log read for a resume failed, the client started
// over from the history, and the frames that had waited during the read went
// out, from chunk 7 of a reply the client never saw begin.
TEST_F(LogShardTest, AfterAFailedLogReadNoReplyStartsInItsMiddle) {
  auto s = stream("s1", sse::ResumeCursor{"m0", 3});
  shard.on_chunk(chunk("s1", "m1", 7), false);  // m1 began on the old pod
  now += 6s;
  shard.check_gaps();  // chunks 0 to 6 are given up: chunk 7 waits for the stream
  shard.resume_from_log("s1", catch_ups[0].first, catch_ups[0].second, std::nullopt);
  shard.on_chunk(chunk("s1", "m1", 8, true), false);
  shard.on_chunk(chunk("s1", "m2", 0), false);
  shard.on_chunk(chunk("s1", "m2", 1, true), false);
  ASSERT_FALSE(s->frames().empty());
  EXPECT_NE(s->frames().front()->find("resume_unavailable"), std::string::npos);
  EXPECT_EQ(s->chunk_ids(), (Events{"m2:0", "m2:1"})) << "m1 is left to the history, m2 goes whole";
  auto events = s->events();
  EXPECT_EQ(std::count(events.begin(), events.end(), "message_complete"), 2)
      << "m1's end still goes: it sends the client to the history";
}

TEST_F(LogShardTest, FillingFromTheLogFeedsRunningRepliesButNotOldFinishedOnes) {
  auto s = stream("s1");
  std::vector<protocol::ResponseChunk> log{chunk("s1", "old", 0, true), chunk("s1", "m1", 0), chunk("s1", "m1", 1)};
  shard.fill_from_log(log);
  EXPECT_EQ(s->chunk_ids(), (Events{"m1:0", "m1:1"}));
  EXPECT_TRUE(finished.empty());
}

struct BudgetShardTest : ShardTest {
  BudgetShardTest() {
    options.shards = 1;
    options.reply_memory_budget = 64;  // less than one finished reply's frames
  }
};

TEST_F(BudgetShardTest, PastItsShareAShardDropsFinishedRepliesKeptForResumes) {
  auto s = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  EXPECT_GT(shard.gauges().reply_bytes.load(), 0u) << "a running reply's text and frames are counted";
  shard.on_chunk(chunk("s1", "m1", 1, true), false);
  EXPECT_EQ(shard.gauges().reply_bytes.load(), 0u) << "its frames left at once, not after the replay window";
  auto back = stream("s1", sse::ResumeCursor{"m1", 0});
  ASSERT_FALSE(back->events().empty());
  EXPECT_EQ(back->events().front(), "reset") << "the resume says the reply is gone (the history has it)";
}

TEST_F(ShardTest, WithoutABudgetFinishedRepliesStayForResumes) {
  auto s = stream("s1");
  shard.on_chunk(chunk("s1", "m1", 0), false);
  shard.on_chunk(chunk("s1", "m1", 1, true), false);
  EXPECT_GT(shard.gauges().reply_bytes.load(), 0u);
  auto back = stream("s1", sse::ResumeCursor{"m1", 0});
  EXPECT_EQ(back->chunk_ids(), (Events{"m1:1"}));
}

}  // namespace
}  // namespace chat::hub
