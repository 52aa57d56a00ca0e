#include "buffer/buffer_manager.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace chat::buffer {
namespace {

using namespace std::chrono_literals;

protocol::ResponseChunk chunk(std::string message, std::uint32_t id, bool final = false) {
  protocol::ResponseChunk c;
  c.session_id = "s1";
  c.message_id = std::move(message);
  c.chunk_id = id;
  c.chunk = std::to_string(id);
  c.is_final = final;
  if (final) c.metadata = protocol::ChunkMetadata{"demo-1", 42, "stop"};
  return c;
}

std::vector<std::uint32_t> released_ids(const std::vector<Event>& events) {
  std::vector<std::uint32_t> out;
  for (const auto& e : events)
    if (auto* r = std::get_if<ChunkReady>(&e)) out.push_back(r->chunk.chunk_id);
  return out;
}

const FinishedMessage* finished(const std::vector<Event>& events) {
  for (const auto& e : events)
    if (auto* f = std::get_if<MessageFinished>(&e)) return &f->message;
  return nullptr;
}

struct BufferManagerTest : ::testing::Test {
  SteadyTime t0 = std::chrono::steady_clock::now();
  BufferManager manager{Limits{3, 100, 300s, 30s}};
  std::vector<Event> events;
};

TEST_F(BufferManagerTest, ACompleteMessageFinishesWithItsMetadata) {
  manager.push(chunk("m1", 1), t0, events);
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m1", 2, true), t0 + 2s, events);
  EXPECT_EQ(released_ids(events), (std::vector<std::uint32_t>{0, 1, 2}));
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->content, "012");
  EXPECT_EQ(f->status, MessageStatus::complete);
  EXPECT_EQ(f->token_count, 42);
  EXPECT_EQ(f->finish_reason, "stop");
  EXPECT_EQ(f->model, "demo-1");
  EXPECT_EQ(f->duration, 2s);
  EXPECT_FALSE(f->unstarted);
  EXPECT_EQ(manager.size(), 0u);
}

TEST_F(BufferManagerTest, LateDuplicatesOfAFinishedMessageDoNotRestartIt) {
  manager.push(chunk("m1", 0, true), t0, events);
  events.clear();
  manager.push(chunk("m1", 0, true), t0, events);
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(manager.size(), 0u);
  EXPECT_EQ(manager.counters().late_dropped.value(), 1u);
}

TEST_F(BufferManagerTest, DuplicatesAreCounted) {
  manager.push(chunk("m1", 1), t0, events);
  manager.push(chunk("m1", 1), t0, events);
  EXPECT_EQ(manager.counters().duplicates_dropped.value(), 1u);
}

TEST_F(BufferManagerTest, ChunksThatArriveAheadOfTheirTurnAreCountedAsReordered) {
  manager.push(chunk("m1", 1), t0, events);
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m1", 2), t0, events);
  EXPECT_EQ(manager.counters().chunks_reordered.value(), 1u);
  EXPECT_EQ(manager.counters().chunks_released.value(), 3u);
}

TEST_F(BufferManagerTest, AMissingChunkIsReportedAndTheMessageStoredIncomplete) {
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m1", 2, true), t0, events);
  events.clear();
  manager.check_gaps(t0 + 10s, events);
  EXPECT_TRUE(events.empty());
  manager.check_gaps(t0 + 30s, events);
  ASSERT_FALSE(events.empty());
  auto* missing = std::get_if<ChunksMissing>(&events.front());
  ASSERT_NE(missing, nullptr);
  EXPECT_EQ(missing->ids, (std::vector<std::uint32_t>{1}));
  EXPECT_EQ(released_ids(events), (std::vector<std::uint32_t>{2}));
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->status, MessageStatus::incomplete);
  EXPECT_EQ(f->missing_chunks, (std::vector<std::uint32_t>{1}));
  EXPECT_EQ(manager.counters().chunks_skipped.value(), 1u);
}

bool unwatched(const std::string&) { return false; }

TEST_F(BufferManagerTest, OldBuffersExpireAsIncomplete) {
  manager.expect("s1", "m1", t0, events);
  manager.push(chunk("m1", 0), t0, events);
  events.clear();
  manager.expire_old(t0 + 299s, events, unwatched);
  EXPECT_TRUE(events.empty());
  manager.expire_old(t0 + 300s, events, unwatched);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->status, MessageStatus::incomplete);
  EXPECT_EQ(f->error_code, "reply_timeout");
  EXPECT_EQ(f->content, "0");
  EXPECT_EQ(manager.counters().buffers_expired.value(), 1u);
}

TEST_F(BufferManagerTest, TheLeastRecentlyActiveBufferIsEvictedAtTheLimit) {
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m2", 0), t0 + 1s, events);
  manager.push(chunk("m3", 0), t0 + 2s, events);
  manager.push(chunk("m1", 1), t0 + 3s, events);  // m2 is now the stalest
  events.clear();
  manager.push(chunk("m4", 0), t0 + 4s, events);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->message_id, "m2");
  EXPECT_EQ(f->error_code, "buffer_evicted");
  EXPECT_FALSE(f->stored_here) << "another pod accepted m2 and stores it whole";
  EXPECT_EQ(manager.size(), 3u);
  EXPECT_TRUE(manager.has("m4"));
  EXPECT_EQ(manager.counters().buffers_evicted.value(), 1u);
}

TEST_F(BufferManagerTest, ErrorAndCancelledFinalsSetTheStatus) {
  auto err = chunk("m1", 0, true);
  err.chunk_type = protocol::ChunkType::error;
  err.metadata->finish_reason = "error";
  err.error = protocol::ChunkError{"provider_error", "upstream failed"};
  manager.push(err, t0, events);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->status, MessageStatus::error);
  EXPECT_EQ(f->error_code, "provider_error");
  events.clear();
  auto cancelled = chunk("m2", 0, true);
  cancelled.metadata->finish_reason = "cancelled";
  manager.push(cancelled, t0, events);
  ASSERT_NE(finished(events), nullptr);
  EXPECT_EQ(finished(events)->status, MessageStatus::cancelled);
}

TEST_F(BufferManagerTest, AnotherPodsUnwatchedReplyExpiresWithoutBeingStored) {
  // Both arrived while a stream was here; only s2 still has one.
  manager.push(chunk("m1", 0), t0, events);
  auto watched_reply = chunk("m2", 0);
  watched_reply.session_id = "s2";
  manager.push(watched_reply, t0, events);
  events.clear();
  manager.expire_old(t0 + 300s, events, [](const std::string& s) { return s == "s2"; });
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->message_id, "m2") << "a watched reply still ends on its streams";
  ASSERT_EQ(events.size(), 2u) << "the unwatched one is not finished, so not stored as incomplete";
  auto abandoned = std::find_if(events.begin(), events.end(),
                                [](const auto& e) { return std::holds_alternative<ReplyAbandoned>(e); });
  ASSERT_NE(abandoned, events.end()) << "its streams' copy must go too";
  EXPECT_EQ(std::get<ReplyAbandoned>(*abandoned).message_id, "m1");
  EXPECT_FALSE(manager.has("m1"));
  EXPECT_EQ(manager.counters().buffers_abandoned.value(), 1u);
  EXPECT_EQ(manager.streaming(), 0u);
  events.clear();
  manager.push(chunk("m1", 1, true), t0 + 301s, events);  // its late final does not revive it
  EXPECT_TRUE(events.empty());
}

TEST_F(BufferManagerTest, AtTheLimitAnotherPodsReplyIsEvictedBeforeOneAcceptedHere) {
  manager.expect("s1", "m1", t0, events);  // the least recently active, but accepted here
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m2", 0), t0 + 1s, events);
  manager.push(chunk("m3", 0), t0 + 2s, events);
  events.clear();
  manager.expect("s1", "m4", t0 + 3s, events);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr) << "the evicted reply must be finished (streamed), not forgotten";
  EXPECT_EQ(f->message_id, "m2");
  EXPECT_EQ(f->error_code, "buffer_evicted");
  EXPECT_FALSE(f->stored_here) << "another pod accepted m2 and stores it whole";
  EXPECT_FALSE(manager.stored_here("m2")) << "a copy read from the log may still be stored";
  EXPECT_TRUE(manager.has("m1"));
  EXPECT_TRUE(manager.has("m4"));
  EXPECT_EQ(manager.accepted(), 2u);
}

TEST_F(BufferManagerTest, WhenEveryBufferWasAcceptedHereTheLeastRecentlyActiveIsStoredWithWhatItHad) {
  manager.expect("s1", "m1", t0, events);
  manager.push(chunk("m1", 0), t0, events);
  manager.expect("s1", "m2", t0 + 1s, events);
  manager.expect("s1", "m3", t0 + 2s, events);
  events.clear();
  manager.expect("s1", "m4", t0 + 3s, events);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->message_id, "m1");
  EXPECT_EQ(f->status, MessageStatus::incomplete);
  EXPECT_EQ(f->error_code, "buffer_evicted");
  EXPECT_EQ(f->content, "0");
  EXPECT_TRUE(f->stored_here) << "accepted here: nobody else stores it";
  EXPECT_TRUE(manager.stored_here("m1"));
  EXPECT_EQ(manager.size(), 3u);
  EXPECT_EQ(manager.accepted(), 3u);
}

const WrongSession* wrong_session(const std::vector<Event>& events) {
  for (const auto& e : events)
    if (auto* w = std::get_if<WrongSession>(&e)) return w;
  return nullptr;
}

protocol::ResponseChunk in_session(protocol::ResponseChunk c, std::string session) {
  c.session_id = std::move(session);
  return c;
}

TEST_F(BufferManagerTest, AChunkNamingAnotherSessionCannotJoinAReply) {
  manager.expect("s1", "m1", t0, events);
  events.clear();
  manager.push(in_session(chunk("m1", 0), "s2"), t0, events);
  EXPECT_TRUE(released_ids(events).empty());
  auto* w = wrong_session(events);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->session_id, "s2");
  EXPECT_EQ(w->reply_session_id, "s1");
  events.clear();
  manager.push(chunk("m1", 0), t0, events);  // the real chunk 0 is no duplicate
  EXPECT_EQ(released_ids(events), std::vector<std::uint32_t>{0});
  // Nor can a chunk of another session end the reply.
  events.clear();
  manager.push(in_session(chunk("m1", 1, true), "s2"), t0, events);
  EXPECT_EQ(finished(events), nullptr);
  EXPECT_EQ(manager.counters().wrong_session_dropped.value(), 2u);
}

TEST_F(BufferManagerTest, AReplyThePodAcceptedForASessionOfAnotherManagerOpensNoBufferHere) {
  ReplySessions pod_sessions;
  pod_sessions.accept("m1", "s1", t0);  // its buffer is in another manager (s1's shard)
  manager.push(in_session(chunk("m1", 0), "s2"), t0, events, true, &pod_sessions);
  EXPECT_NE(wrong_session(events), nullptr);
  EXPECT_FALSE(manager.has("m1"));
  manager.push(in_session(chunk("m2", 0), "s2"), t0, events, true, &pod_sessions);
  EXPECT_TRUE(manager.has("m2")) << "a reply the pod did not accept opens a buffer as before";
  pod_sessions.forget_before(t0 + 1s);
  events.clear();
  manager.push(in_session(chunk("m1", 0), "s3"), t0, events, true, &pod_sessions);
  EXPECT_EQ(wrong_session(events), nullptr);
}

// Each manager holds the buffers of its own sessions: what one saw, the other
// learns from the pod's shared map.
TEST_F(BufferManagerTest, AReplyAnotherManagerHeldStaysItsSessionsAfterItEnded) {
  ReplySessions pod_sessions;
  BufferManager other{Limits{3, 100, 300s, 30s}};
  other.push(chunk("m1", 0), t0, events, true, &pod_sessions);  // another pod's reply, in s1's manager
  manager.push(in_session(chunk("m1", 1), "s2"), t0, events, true, &pod_sessions);
  EXPECT_NE(wrong_session(events), nullptr) << "while it runs";
  other.push(chunk("m1", 1, true), t0, events, true, &pod_sessions);
  ASSERT_NE(finished(events), nullptr);
  pod_sessions.ended("m1", t0);
  events.clear();
  manager.push(in_session(chunk("m1", 0), "s2"), t0, events, true, &pod_sessions);
  EXPECT_NE(wrong_session(events), nullptr) << "after it ended";
  EXPECT_FALSE(manager.has("m1"));
}

TEST(ReplySessions, RunningRepliesAreNeverPushedOutAndEndedOnesAreBounded) {
  ReplySessions sessions;
  const auto t0 = std::chrono::steady_clock::now();
  sessions.accept("mine", "s1", t0);
  EXPECT_EQ(sessions.claim("theirs", "s2", t0), "s2");
  for (std::size_t i = 0; i < ReplySessions::kEndedKept + 10; ++i) {
    const auto id = "m" + std::to_string(i);
    sessions.claim(id, "s3", t0);
    sessions.ended(id, t0);
  }
  EXPECT_EQ(sessions.size(), ReplySessions::kEndedKept + 2) << "running replies stay, ended ones are bounded";
  EXPECT_EQ(sessions.claim("mine", "s9", t0), "s1");
  EXPECT_EQ(sessions.claim("theirs", "s9", t0), "s2");
  EXPECT_EQ(sessions.claim("m0", "s9", t0), "s9") << "the oldest ended one went";
  sessions.ended("mine", t0);
  EXPECT_EQ(sessions.claim("m10", "s3", t0 + 1s), "s3");  // ended, then buffered again: running
  for (std::size_t i = 0; i < ReplySessions::kEndedKept; ++i) {
    const auto id = "n" + std::to_string(i);
    sessions.claim(id, "s4", t0);
    sessions.ended(id, t0);
  }
  EXPECT_EQ(sessions.claim("m10", "s9", t0), "s3") << "its old place in the order of ended replies did not push it out";
  sessions.forget_before(t0 + 2s);
  EXPECT_EQ(sessions.size(), 0u);
}

TEST_F(BufferManagerTest, ASilentAcceptedReplyKeepsItsSession) {
  manager.expect("s1", "m1", t0, events);
  manager.expire_old(t0 + 300s, events, unwatched);  // no chunk within max_age: the buffer goes
  events.clear();
  manager.push(in_session(chunk("m1", 0), "s2"), t0 + 301s, events);
  EXPECT_NE(wrong_session(events), nullptr);
  EXPECT_FALSE(manager.has("m1"));
  manager.push(chunk("m1", 0), t0 + 302s, events);
  EXPECT_EQ(released_ids(events), std::vector<std::uint32_t>{0});
  EXPECT_EQ(manager.accepted(), 1u) << "still this pod's to store";
}

TEST_F(BufferManagerTest, DeletingASessionReturnsItsSilentAcceptedRepliesToo) {
  manager.expect("s1", "m1", t0, events);
  manager.expect("s2", "m2", t0, events);
  manager.expire_old(t0 + 300s, events, unwatched);  // neither sent a chunk: both buffers went
  EXPECT_EQ(manager.drop_session("s1", t0 + 301s), (std::vector<std::string>{"m1"})) << "to cancel, and free its place";
  events.clear();
  manager.push(chunk("m1", 0), t0 + 302s, events);
  EXPECT_TRUE(events.empty()) << "a chunk of the deleted session's reply opened a buffer";
  manager.push(in_session(chunk("m2", 0), "s2"), t0 + 302s, events);
  EXPECT_EQ(manager.accepted(), 1u) << "the other session's silent reply is still this pod's";
}

TEST_F(BufferManagerTest, WithTheMemorySpentAnotherPodsReplyIsNotKeptButOneAcceptedHereIs) {
  manager.push(chunk("m9", 0), t0, events, false);
  EXPECT_FALSE(manager.has("m9")) << "another pod's reply opened a buffer with the memory spent";
  manager.push(chunk("m2", 0), t0, events);  // another pod's, opened while there was room
  manager.push(chunk("m2", 2), t0, events, false);
  manager.expect("s1", "m1", t0, events);
  manager.push(chunk("m1", 1), t0, events, false);
  EXPECT_EQ(manager.counters().no_room_dropped.value(), 2u);
  events.clear();
  manager.push(chunk("m2", 1), t0, events, false);  // due: taken
  manager.push(chunk("m1", 0), t0, events, false);
  EXPECT_EQ(released_ids(events), (std::vector<std::uint32_t>{1, 0, 1})) << "m1 kept its held chunk 1";
}

TEST_F(BufferManagerTest, FinishAcceptedEndsOnlyTheRepliesAcceptedHereWithWhatTheyHave) {
  manager.expect("s1", "m1", t0, events);
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m1", 1), t0, events);
  manager.expect("s1", "m2", t0, events);  // accepted, silent so far
  manager.push(chunk("m3", 0), t0, events);  // another pod's
  events.clear();
  EXPECT_EQ(manager.finish_accepted(t0 + 1s, events, "shutdown"), 2u);
  std::map<std::string, FinishedMessage> ended;
  for (const auto& e : events)
    if (auto* f = std::get_if<MessageFinished>(&e)) ended[f->message.message_id] = f->message;
  ASSERT_EQ(ended.size(), 2u);
  EXPECT_EQ(ended["m1"].content, "01");
  EXPECT_EQ(ended["m2"].content, "");
  for (const auto& [id, m] : ended) {
    EXPECT_EQ(m.status, MessageStatus::incomplete) << id;
    EXPECT_EQ(m.error_code, "shutdown") << id;
    EXPECT_TRUE(m.stored_here) << id;
  }
  EXPECT_TRUE(manager.has("m3")) << "another pod's reply is that pod's to end";
  EXPECT_EQ(manager.accepted(), 0u);
  events.clear();
  manager.push(chunk("m1", 2, true), t0 + 2s, events);
  EXPECT_TRUE(events.empty()) << "a chunk after the end is late";
}

TEST_F(BufferManagerTest, AnotherPodsReplyEndsAtOnceWhenEveryBufferWasAcceptedHere) {
  for (const char* m : {"m1", "m2", "m3"}) manager.expect("s1", m, t0, events);
  events.clear();
  manager.push(chunk("m4", 0), t0 + 1s, events);
  EXPECT_TRUE(released_ids(events).empty());
  auto* f = finished(events);
  ASSERT_NE(f, nullptr) << "its streams here see it end";
  EXPECT_EQ(f->message_id, "m4");
  EXPECT_EQ(f->error_code, "buffer_evicted");
  EXPECT_FALSE(f->stored_here) << "the pod that accepted it stores it";
  EXPECT_EQ(manager.size(), 3u);
  EXPECT_EQ(manager.accepted(), 3u);
  EXPECT_EQ(manager.counters().buffers_evicted.value(), 1u);
  EXPECT_EQ(manager.counters().no_room_dropped.value(), 1u) << "its chunk is counted as dropped";
  events.clear();
  manager.push(chunk("m4", 1, true), t0 + 2s, events);
  EXPECT_TRUE(events.empty()) << "its later chunks are dropped as late";
  EXPECT_EQ(manager.counters().late_dropped.value(), 1u);
}

// A reply that waited in the work queue past max_age: its empty buffer went,
// but the pod still owes the store its reply.
TEST_F(BufferManagerTest, AnAcceptedReplyWhoseFirstChunkComesAfterItsBufferWentIsStillAcceptedHere) {
  manager.expect("s1", "m1", t0, events);
  manager.expire_old(t0 + 300s, events, unwatched);
  ASSERT_FALSE(manager.has("m1"));
  EXPECT_EQ(manager.accepted(), 0u);
  manager.push(chunk("m1", 0), t0 + 400s, events);
  EXPECT_EQ(manager.accepted_at("m1"), t0) << "the POST's time, for time to first chunk";
  EXPECT_FALSE(manager.expects("m1") && !manager.has("m1"));
  EXPECT_EQ(manager.accepted(), 1u);
  manager.push(chunk("m2", 0), t0 + 401s, events);
  manager.push(chunk("m3", 0), t0 + 402s, events);
  events.clear();
  manager.push(chunk("m4", 0), t0 + 403s, events);
  ASSERT_NE(finished(events), nullptr);
  EXPECT_EQ(finished(events)->message_id, "m2") << "another pod's reply makes room, not m1";
}

TEST_F(BufferManagerTest, AReplyEndedHereEarlySaysWhoAskedForItEvenAfterASilentSpellAndThatNoFinalCame) {
  manager.expect("s1", "m1", t0, events, "u1");
  manager.expire_old(t0 + 300s, events, unwatched);  // nothing yet: the buffer goes, the reply stays this pod's
  ASSERT_FALSE(manager.has("m1"));
  manager.push(chunk("m1", 0), t0 + 400s, events);
  events.clear();
  manager.expire_old(t0 + 700s, events, unwatched);
  auto* cut = finished(events);
  ASSERT_NE(cut, nullptr);
  EXPECT_EQ(cut->error_code, "reply_timeout");
  EXPECT_EQ(cut->asked_by, "u1") << "the pod stops its worker in that user's name";
  EXPECT_FALSE(cut->final_received) << "its worker may still be generating it";

  events.clear();
  manager.expect("s1", "m2", t0 + 700s, events, "u1");
  manager.push(chunk("m2", 0, true), t0 + 701s, events);
  auto* whole = finished(events);
  ASSERT_NE(whole, nullptr);
  EXPECT_EQ(whole->message_id, "m2");
  EXPECT_TRUE(whole->final_received);
  events.clear();
  manager.push(chunk("m3", 0, true), t0 + 702s, events);
  ASSERT_NE(finished(events), nullptr);
  EXPECT_EQ(finished(events)->asked_by, "") << "another pod's reply: not this pod's to stop";
}

TEST_F(BufferManagerTest, AnAcceptedReplySilentForAnotherMaxAgeEndsEmptyAndIncomplete) {
  manager.expect("s1", "m1", t0, events, "u1");
  manager.expire_old(t0 + 300s, events, unwatched);
  events.clear();
  manager.expire_old(t0 + 600s, events, unwatched);
  auto* ended = finished(events);
  ASSERT_NE(ended, nullptr) << "the user would wait for good, and the reply's places stay taken";
  EXPECT_EQ(ended->message_id, "m1");
  EXPECT_EQ(ended->session_id, "s1");
  EXPECT_EQ(ended->status, MessageStatus::incomplete);
  EXPECT_EQ(ended->error_code, "reply_timeout");
  EXPECT_EQ(ended->content, "");
  EXPECT_TRUE(ended->stored_here);
  EXPECT_FALSE(ended->final_received);
  EXPECT_EQ(ended->asked_by, "u1") << "its worker, should one hold it yet, is told to stop";
  EXPECT_TRUE(ended->unstarted) << "and its request, should it still wait in the queue, withdrawn";
  EXPECT_EQ(ended->duration, std::chrono::duration_cast<std::chrono::milliseconds>(600s));
  EXPECT_TRUE(manager.stored_here("m1"));
  EXPECT_FALSE(manager.expects("m1"));
  events.clear();
  manager.push(chunk("m1", 0), t0 + 601s, events);
  EXPECT_TRUE(events.empty()) << "a chunk that still comes is late";
  EXPECT_FALSE(manager.has("m1"));
  manager.expire_old(t0 + 900s, events, unwatched);
  EXPECT_EQ(finished(events), nullptr) << "ended once";
}

TEST_F(BufferManagerTest, ItsUserCancelsAnAcceptedReplyBeforeItsFirstChunkAndItEndsEmptyAndCancelled) {
  manager.expect("s1", "m1", t0, events, "u1");
  EXPECT_EQ(manager.cancel_unstarted("m1", "u2", t0 + 1s, events), CancelResult::other_user);
  EXPECT_TRUE(events.empty());
  EXPECT_TRUE(manager.has("m1")) << "another user's cancel changes nothing";

  EXPECT_EQ(manager.cancel_unstarted("m1", "u1", t0 + 2s, events), CancelResult::cancelled);
  auto* ended = finished(events);
  ASSERT_NE(ended, nullptr);
  EXPECT_EQ(ended->message_id, "m1");
  EXPECT_EQ(ended->session_id, "s1");
  EXPECT_EQ(ended->status, MessageStatus::cancelled);
  EXPECT_EQ(ended->finish_reason, "cancelled");
  EXPECT_EQ(ended->content, "");
  EXPECT_TRUE(ended->stored_here);
  EXPECT_EQ(ended->duration, std::chrono::duration_cast<std::chrono::milliseconds>(2s));
  EXPECT_TRUE(ended->unstarted) << "its request may still wait in the work queue: the pod withdraws it";
  EXPECT_FALSE(manager.has("m1"));
  EXPECT_FALSE(manager.expects("m1"));
  EXPECT_EQ(manager.accepted(), 0u) << "its place is free for the next chat";

  events.clear();
  EXPECT_EQ(manager.cancel_unstarted("m1", "u1", t0 + 3s, events), CancelResult::not_held) << "ended once";
  manager.push(chunk("m1", 0, true), t0 + 4s, events);
  EXPECT_TRUE(events.empty()) << "a worker that took it later: its chunks are late";
  manager.expire_old(t0 + 700s, events, unwatched);
  EXPECT_EQ(finished(events), nullptr) << "not given up later";
}

TEST_F(BufferManagerTest, ASilentAcceptedReplyIsCancelledByItsUserOnly) {
  manager.expect("s1", "m1", t0, events, "u1");
  manager.expire_old(t0 + 300s, events, unwatched);  // its empty buffer went; it waits in the work queue
  events.clear();
  EXPECT_EQ(manager.cancel_unstarted("m1", "u2", t0 + 301s, events), CancelResult::other_user);
  EXPECT_TRUE(manager.expects("m1"));
  EXPECT_EQ(manager.cancel_unstarted("m1", "u1", t0 + 302s, events), CancelResult::cancelled);
  auto* ended = finished(events);
  ASSERT_NE(ended, nullptr);
  EXPECT_EQ(ended->status, MessageStatus::cancelled);
  EXPECT_EQ(ended->session_id, "s1");
  EXPECT_EQ(ended->asked_by, "u1");
  EXPECT_FALSE(manager.expects("m1"));
  events.clear();
  manager.expire_old(t0 + 600s, events, unwatched);
  EXPECT_EQ(finished(events), nullptr) << "not given up as well";
}

TEST_F(BufferManagerTest, AReplyWithAChunkOrAnotherPodsIsNotCancelledHere) {
  manager.expect("s1", "m1", t0, events, "u1");
  manager.push(chunk("m1", 1), t0 + 1s, events);  // held out of its turn: a worker runs it
  manager.push(chunk("m2", 0), t0 + 1s, events);  // another pod's reply
  manager.expect("s1", "m3", t0, events);           // accepted for nobody known
  events.clear();
  EXPECT_EQ(manager.cancel_unstarted("m1", "u1", t0 + 2s, events), CancelResult::not_held) << "its worker answers";
  EXPECT_EQ(manager.cancel_unstarted("m2", "u1", t0 + 2s, events), CancelResult::not_held);
  EXPECT_EQ(manager.cancel_unstarted("m3", "u1", t0 + 2s, events), CancelResult::not_held);
  EXPECT_EQ(manager.cancel_unstarted("m9", "u1", t0 + 2s, events), CancelResult::not_held);
  EXPECT_TRUE(events.empty());
  EXPECT_TRUE(manager.has("m1"));
  EXPECT_TRUE(manager.has("m2"));
  EXPECT_TRUE(manager.has("m3"));
}

TEST_F(BufferManagerTest, ASilentReplyStoredFromTheLogIsNotGivenUpLater) {
  manager.expect("s1", "m1", t0, events, "u1");
  manager.expire_old(t0 + 300s, events, unwatched);
  manager.stored_from_log("m1", t0 + 310s);  // a resume read it whole from the log
  EXPECT_FALSE(manager.expects("m1"));
  events.clear();
  manager.expire_old(t0 + 600s, events, unwatched);
  EXPECT_EQ(finished(events), nullptr) << "stored once, ended once";
}

TEST_F(BufferManagerTest, StoredHereTellsWhatIsLeftToStore) {
  manager.push(chunk("m1", 0, true), t0, events);
  EXPECT_TRUE(manager.stored_here("m1"));
  manager.push(chunk("m0", 0), t0, events);
  manager.expire_old(t0 + 300s, events, unwatched);  // another pod's, nobody here watches: not stored here
  EXPECT_FALSE(manager.stored_here("m0"));
  manager.stored_from_log("m0", t0 + 301s);
  EXPECT_TRUE(manager.stored_here("m0")) << "a copy from the log was stored: once is enough";
  manager.push(chunk("m2", 0), t0, events);
  manager.drop_session("s1", t0);
  EXPECT_TRUE(manager.stored_here("m2")) << "nothing of a deleted session is stored";
  EXPECT_FALSE(manager.stored_here("m3")) << "never seen here";
}

TEST_F(BufferManagerTest, OwedCountsAcceptedRepliesAndWatchedSessions) {
  manager.expect("s1", "m1", t0, events);  // accepted here, silent so far
  auto other = chunk("m2", 0);
  other.session_id = "s2";
  manager.push(other, t0, events);           // another pod's reply
  auto watched_s2 = [](const std::string& s) { return s == "s2"; };
  EXPECT_EQ(manager.owed(unwatched), 1u);
  EXPECT_EQ(manager.owed(watched_s2), 2u);
}

TEST_F(BufferManagerTest, ExpectedMessagesHoldABufferBeforeTheFirstChunk) {
  manager.expect("s1", "m9", t0, events);
  EXPECT_TRUE(manager.has("m9"));
  manager.push(chunk("m9", 0, true), t0, events);
  EXPECT_FALSE(manager.has("m9"));
  ASSERT_NE(finished(events), nullptr);
}

TEST_F(BufferManagerTest, AnExpectedReplyThatNeverArrivesIsDroppedQuietly) {
  manager.expect("s1", "m9", t0, events);
  manager.expire_old(t0 + 300s, events, unwatched);
  ASSERT_EQ(events.size(), 1u) << "nothing finished, nothing stored: only the shard is told";
  auto* silent = std::get_if<ReplySilent>(&events[0]);
  ASSERT_NE(silent, nullptr);
  EXPECT_EQ(silent->message_id, "m9");
  EXPECT_FALSE(manager.has("m9"));
  EXPECT_TRUE(manager.expects("m9")) << "its first chunk may still come";
  EXPECT_EQ(manager.counters().never_arrived.value(), 1u);
}

TEST_F(BufferManagerTest, AStalledMessageAsksForReplayOncePerInterval) {
  manager.push(chunk("m1", 2), t0, events);
  EXPECT_TRUE(manager.stalled(t0 + 500ms, 1s, 2s, unwatched).empty());
  EXPECT_EQ(manager.stalled(t0 + 1s, 1s, 2s, unwatched), (std::vector<std::pair<std::string, std::string>>{{"s1", "m1"}}));
  EXPECT_TRUE(manager.stalled(t0 + 2s, 1s, 2s, unwatched).empty());
  EXPECT_EQ(manager.stalled(t0 + 3s, 1s, 2s, unwatched), (std::vector<std::pair<std::string, std::string>>{{"s1", "m1"}}));
  EXPECT_EQ(manager.counters().replays_requested.value(), 2u);
  manager.push(chunk("m1", 0), t0 + 3s, events);
  manager.push(chunk("m1", 1), t0 + 3s, events);
  EXPECT_TRUE(manager.stalled(t0 + 10s, 1s, 2s, unwatched).empty());
}

TEST_F(BufferManagerTest, ASilentExpectedReplyAsksForReplayOnlyWhenSomeoneWatches) {
  manager.expect("s1", "m1", t0, events);
  EXPECT_TRUE(manager.stalled(t0 + 2s, 1s, 2s, unwatched).empty());
  auto watched = [](const std::string& s) { return s == "s1"; };
  EXPECT_EQ(manager.stalled(t0 + 2s, 1s, 2s, watched), (std::vector<std::pair<std::string, std::string>>{{"s1", "m1"}}));
}

TEST_F(BufferManagerTest, AReplyThatSentNothingYetAsksLessAndLessOften) {
  // Most likely queued behind others in the work queue: each ask may read the chunk log.
  auto watched = [](const std::string& s) { return s == "s1"; };
  manager.expect("s1", "m1", t0, events);
  std::vector<int> asked_at;
  for (int second = 0; second <= 70; ++second)
    if (!manager.stalled(t0 + std::chrono::seconds(second), 1s, 2s, watched).empty()) asked_at.push_back(second);
  EXPECT_EQ(asked_at, (std::vector<int>{1, 5, 13, 29, 61}));
  // Once chunks flow, a gap is asked about at the plain interval again.
  manager.push(chunk("m1", 0), t0 + 70s, events);
  manager.push(chunk("m1", 2), t0 + 70s, events);
  EXPECT_EQ(manager.stalled(t0 + 71s, 1s, 2s, watched).size(), 1u);
  EXPECT_EQ(manager.stalled(t0 + 73s, 1s, 2s, watched).size(), 1u);
}

TEST_F(BufferManagerTest, AReplySilentAfterItsLastChunkAsksForReplayWhenSomeoneWaitsForIt) {
  // The tail (the final chunk included) went elsewhere: no later chunk will show a gap.
  auto watched = [](const std::string& s) { return s == "s1"; };
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m1", 1), t0 + 500ms, events);
  EXPECT_TRUE(manager.stalled(t0 + 1s, 1s, 2s, watched).empty());
  EXPECT_TRUE(manager.stalled(t0 + 2s, 1s, 2s, unwatched).empty());  // nobody here waits for it
  EXPECT_EQ(manager.stalled(t0 + 2s, 1s, 2s, watched), (std::vector<std::pair<std::string, std::string>>{{"s1", "m1"}}));
  EXPECT_TRUE(manager.stalled(t0 + 3s, 1s, 2s, watched).empty());
  manager.push(chunk("m1", 2, true), t0 + 4s, events);
  EXPECT_TRUE(manager.stalled(t0 + 10s, 1s, 2s, watched).empty());
}

TEST_F(BufferManagerTest, AReplySilentAfterItsLastChunkAsksLessAndLessOftenUntilItsNextChunk) {
  // Most likely its provider is slow (thinking, calling a tool): each ask may read the chunk log.
  auto watched = [](const std::string& s) { return s == "s1"; };
  manager.push(chunk("m1", 0), t0, events);
  std::vector<int> asked_at;
  for (int second = 0; second <= 40; ++second)
    if (!manager.stalled(t0 + std::chrono::seconds(second), 1s, 2s, watched).empty()) asked_at.push_back(second);
  EXPECT_EQ(asked_at, (std::vector<int>{1, 5, 13, 29}));
  // A chunk came: the next silence is asked about early again.
  manager.push(chunk("m1", 1), t0 + 40s, events);
  asked_at.clear();
  for (int second = 40; second <= 50; ++second)
    if (!manager.stalled(t0 + std::chrono::seconds(second), 1s, 2s, watched).empty()) asked_at.push_back(second);
  EXPECT_EQ(asked_at, (std::vector<int>{41, 45}));
}

TEST_F(BufferManagerTest, AGapIsAskedAboutAtThePlainIntervalHoweverLong) {
  auto watched = [](const std::string& s) { return s == "s1"; };
  manager.push(chunk("m1", 0), t0, events);
  manager.push(chunk("m1", 2), t0, events);  // chunk 1 is missing
  std::vector<int> asked_at;
  for (int second = 0; second <= 10; ++second)
    if (!manager.stalled(t0 + std::chrono::seconds(second), 1s, 2s, watched).empty()) asked_at.push_back(second);
  EXPECT_EQ(asked_at, (std::vector<int>{1, 3, 5, 7, 9}));
}

TEST_F(BufferManagerTest, AnAcceptedReplySilentAfterItsLastChunkAsksForReplayUnwatched) {
  manager.expect("s1", "m1", t0, events);
  manager.push(chunk("m1", 0), t0, events);
  EXPECT_EQ(manager.stalled(t0 + 1s, 1s, 2s, unwatched), (std::vector<std::pair<std::string, std::string>>{{"s1", "m1"}}));
}

TEST_F(BufferManagerTest, AWatchedReplySilentAfterItsLastChunkIsReportedDelayedOnce) {
  auto watched = [](const std::string& s) { return s == "s1"; };
  manager.push(chunk("m1", 0), t0, events);
  EXPECT_TRUE(manager.newly_delayed(t0 + 2s, 3s, watched).empty());
  auto delayed = manager.newly_delayed(t0 + 3s, 3s, watched);
  ASSERT_EQ(delayed.size(), 1u);
  EXPECT_EQ(delayed[0].next_chunk_id, 1u);
  EXPECT_TRUE(manager.newly_delayed(t0 + 5s, 3s, watched).empty());
  manager.push(chunk("m1", 1), t0 + 5s, events);  // a new wait starts with the new chunk
  EXPECT_EQ(manager.newly_delayed(t0 + 8s, 3s, watched).size(), 1u);
}

TEST_F(BufferManagerTest, DroppingASessionForgetsItsReplies) {
  manager.push(chunk("m1", 0), t0, events);
  manager.expect("s2", "m2", t0, events);
  EXPECT_EQ(manager.drop_session("s1", t0), (std::vector<std::string>{"m1"}));
  EXPECT_FALSE(manager.has("m1"));
  EXPECT_TRUE(manager.has("m2"));
  events.clear();
  manager.push(chunk("m1", 1), t0, events);  // a late chunk does not revive it
  EXPECT_TRUE(events.empty());
  EXPECT_FALSE(manager.has("m1"));
}

protocol::ResponseChunk attempt(protocol::ResponseChunk c, std::uint32_t n) {
  c.attempt = n;
  c.chunk = std::to_string(c.chunk_id) + "@" + std::to_string(n);
  return c;
}

TEST_F(BufferManagerTest, ANewerAttemptStartsTheReplyOverAndTheOlderOneIsIgnored) {
  manager.push(attempt(chunk("m1", 0), 1), t0, events);
  manager.push(attempt(chunk("m1", 1), 1), t0, events);
  events.clear();
  manager.push(attempt(chunk("m1", 0), 2), t0, events);
  ASSERT_EQ(events.size(), 2u);
  auto* restarted = std::get_if<ReplyRestarted>(&events[0]);
  ASSERT_NE(restarted, nullptr) << "the restart comes before the new attempt's chunks";
  EXPECT_EQ(restarted->message_id, "m1");
  EXPECT_EQ(restarted->attempt, 2u);
  EXPECT_EQ(released_ids(events), (std::vector<std::uint32_t>{0}));
  events.clear();
  manager.push(attempt(chunk("m1", 2), 1), t0, events);  // the dead worker's last words
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(manager.counters().stale_attempts_dropped.value(), 1u);
  manager.push(attempt(chunk("m1", 1, true), 2), t0, events);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->content, "0@21@2") << "only the new attempt's text";
  EXPECT_EQ(manager.streaming(), 0u);
}

TEST_F(BufferManagerTest, TheFirstFinishedAttemptWins) {
  manager.push(attempt(chunk("m1", 0, true), 1), t0, events);
  ASSERT_NE(finished(events), nullptr);
  events.clear();
  manager.push(attempt(chunk("m1", 0), 2), t0, events);
  EXPECT_TRUE(events.empty());
  EXPECT_FALSE(manager.has("m1"));
}

TEST_F(BufferManagerTest, AFirstChunkOfALaterAttemptIsNoRestart) {
  manager.expect("s1", "m1", t0, events);
  manager.push(attempt(chunk("m1", 0), 3), t0, events);
  EXPECT_EQ(released_ids(events), (std::vector<std::uint32_t>{0}));
  for (const auto& e : events) EXPECT_FALSE(std::holds_alternative<ReplyRestarted>(e));
}

// Chunk ids of 100 and above are over this manager's BUFFER_MAX_CHUNKS.
TEST_F(BufferManagerTest, AChunkOverTheLimitChangesNothingOfItsReply) {
  manager.expect("s1", "m1", t0, events);
  manager.push(attempt(chunk("m1", 100), 2), t0, events);  // before any chunk
  manager.push(chunk("m1", 0), t0, events);
  manager.push(attempt(chunk("m1", 100), 3), t0, events);  // in its middle
  manager.push(chunk("m1", 1, true), t0, events);
  EXPECT_EQ(manager.counters().over_limit_dropped.value(), 2u);
  for (const auto& e : events) EXPECT_FALSE(std::holds_alternative<ReplyRestarted>(e));
  auto* f = finished(events);
  ASSERT_NE(f, nullptr) << "the stray chunks took the reply with them";
  EXPECT_EQ(f->content, "01");
  EXPECT_EQ(f->status, MessageStatus::complete);
}

TEST_F(BufferManagerTest, AChunkOverTheLimitOpensNoBuffer) {
  manager.push(chunk("m9", 100), t0, events);
  EXPECT_FALSE(manager.has("m9"));
  manager.expire_old(t0 + 300s, events, [](const std::string&) { return false; });
  EXPECT_TRUE(events.empty());
}

TEST_F(BufferManagerTest, ALaterAttemptsChunkThatCannotBeHeldDoesNotWipeTheReply) {
  manager.push(chunk("m1", 0), t0, events);  // another pod's reply
  events.clear();
  manager.push(attempt(chunk("m1", 5), 2), t0, events, false);  // no memory to spare: not held
  EXPECT_TRUE(events.empty());
  manager.push(chunk("m1", 1, true), t0, events, false);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->content, "01");
}

TEST_F(BufferManagerTest, AReplyThatWouldOutgrowItsByteLimitEndsWithWhatFit) {
  BufferManager small{Limits{3, 100, 300s, 30s, 10}};
  small.expect("s1", "m1", t0, events);
  auto text = [](std::uint32_t id, std::string t) {
    auto c = chunk("m1", id);
    c.chunk = std::move(t);
    return c;
  };
  small.push(text(0, "12345"), t0, events);
  small.push(text(1, "678"), t0, events);
  small.push(text(2, "9ab"), t0, events);  // 11 bytes: over
  EXPECT_EQ(released_ids(events), (std::vector<std::uint32_t>{0, 1}));
  auto* f = finished(events);
  ASSERT_NE(f, nullptr) << "it waited for chunks that will not be kept";
  EXPECT_EQ(f->content, "12345678");
  EXPECT_EQ(f->status, MessageStatus::incomplete);
  EXPECT_EQ(f->error_code, "reply_too_large");
  EXPECT_TRUE(f->stored_here);
  events.clear();
  small.push(text(3, ""), t0, events);
  EXPECT_TRUE(events.empty()) << "its later chunks are late";
  EXPECT_EQ(small.held_bytes(), 0u);
}

// Streams keep a frame of every chunk: chunks that add no text count too.
TEST_F(BufferManagerTest, ChunksWithoutTextCountAgainstTheByteLimitToo) {
  BufferManager small{Limits{3, 100, 300s, 30s, 10}};
  auto system = [](std::uint32_t id) {
    auto c = chunk("m1", id);
    c.chunk_type = protocol::ChunkType::system;
    c.chunk = "1234";
    return c;
  };
  small.push(system(0), t0, events);
  small.push(system(1), t0, events);
  small.push(system(2), t0, events);
  EXPECT_EQ(released_ids(events), (std::vector<std::uint32_t>{0, 1}));
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->error_code, "reply_too_large");
}

TEST_F(BufferManagerTest, AnotherPodsReplyCutForItsSizeIsLeftToThatPodToStore) {
  BufferManager small{Limits{3, 100, 300s, 30s, 4}};
  auto c = chunk("m1", 0);
  c.chunk = "12345";
  small.push(c, t0, events);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->error_code, "reply_too_large");
  EXPECT_FALSE(f->stored_here);
}

TEST_F(BufferManagerTest, AnErrorChunkEndsTheReplyInErrorWhateverReasonItNames) {
  auto c = chunk("m1", 0, true);
  c.chunk_type = protocol::ChunkType::error;
  c.error = protocol::ChunkError{"provider_error", "boom"};
  c.metadata->finish_reason = "stop";
  manager.push(c, t0, events);
  auto* f = finished(events);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->status, MessageStatus::error);
  EXPECT_EQ(f->finish_reason, "error");
}

TEST_F(BufferManagerTest, StreamingCountsOnlyBuffersWithChunks) {
  manager.expect("s1", "m1", t0, events);
  manager.push(chunk("m2", 0), t0, events);
  EXPECT_EQ(manager.size(), 2u);
  EXPECT_EQ(manager.streaming(), 1u);
}

TEST_F(BufferManagerTest, HeldBytesCountTheReplyTextUntilEachBufferLeaves) {
  auto text = [](std::string message, std::uint32_t id, std::string t, std::uint32_t attempt = 1) {
    auto c = chunk(std::move(message), id);
    c.chunk = std::move(t);
    c.attempt = attempt;
    return c;
  };
  manager.push(text("m1", 1, "world"), t0, events);  // held, out of turn
  EXPECT_EQ(manager.held_bytes(), 5u);
  manager.push(text("m1", 0, "hello "), t0, events);  // both released into the reply text
  EXPECT_EQ(manager.held_bytes(), 11u);
  manager.push(text("m1", 1, "world"), t0, events);  // a duplicate adds nothing
  EXPECT_EQ(manager.held_bytes(), 11u);
  manager.push(text("m2", 0, "abc"), t0, events);
  EXPECT_EQ(manager.held_bytes(), 14u);
  manager.push(text("m2", 0, "xy", 2), t0, events);  // a newer attempt replaces the older text
  EXPECT_EQ(manager.held_bytes(), 13u);
  manager.push(chunk("m1", 2, true), t0, events);  // m1 finished: its buffer leaves
  EXPECT_EQ(manager.held_bytes(), 2u);
  manager.drop_session("s1", t0);
  EXPECT_EQ(manager.held_bytes(), 0u);
}

}  // namespace
}  // namespace chat::buffer
