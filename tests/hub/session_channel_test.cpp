#include "hub/session_channel.hpp"

#include <gtest/gtest.h>

#include "hub/recording_sink.hpp"

namespace chat::hub {
namespace {

using namespace std::chrono_literals;

sse::Frame frame(std::string text) { return sse::raw_frame(std::move(text)); }

std::vector<std::string> texts(const std::vector<sse::Frame>& frames) {
  std::vector<std::string> out;
  for (const auto& f : frames) out.push_back(*f);
  return out;
}

struct ChannelTest : ::testing::Test {
  Channel channel;
  SteadyTime t0 = std::chrono::steady_clock::now();
  int streams = 0;

  void reply(const std::string& id, int chunks, bool finish) {
    for (int i = 0; i < chunks; ++i) channel.publish(id, i, frame(id + ":" + std::to_string(i)), 100);
    if (finish) {
      channel.publish(id, kReplyEnd, frame(id + ":done"), 100);
      channel.finish(id, t0);
    }
  }

  // Joins a new stream; returns it and whether the channel could serve it.
  std::pair<std::shared_ptr<RecordingSink>, bool> join(std::optional<ResumeCursor> cursor, SteadyTime at) {
    auto s = std::make_shared<RecordingSink>("c" + std::to_string(++streams), "s1");
    Member m{s, nullptr};
    if (cursor) m.record(cursor->message_id, cursor->chunk_id);
    bool ok = channel.join(std::move(m), cursor, at, 30s,
                           [](const std::string& message_id) { return frame("again:" + message_id); });
    return {s, ok};
  }
};

TEST_F(ChannelTest, AFreshStreamGetsRunningRepliesFromChunkZero) {
  reply("m1", 2, false);
  auto [s, ok] = join(std::nullopt, t0);
  EXPECT_TRUE(ok);
  EXPECT_EQ(texts(s->frames()), (std::vector<std::string>{"m1:0", "m1:1"}));
}

TEST_F(ChannelTest, AFinishedReplyNobodySawIsGivenToALateStreamWithinTheWindow) {
  reply("m1", 1, true);
  EXPECT_EQ(texts(join(std::nullopt, t0 + 1s).first->frames()), (std::vector<std::string>{"m1:0", "m1:done"}));
  // Seen now: a second device does not get it again.
  EXPECT_TRUE(join(std::nullopt, t0 + 2s).first->frames().empty());
}

TEST_F(ChannelTest, AFinishedReplyIsNotReplayedAfterTheLateJoinWindow) {
  reply("m1", 1, true);
  EXPECT_TRUE(join(std::nullopt, t0 + 31s).first->frames().empty());
}

TEST_F(ChannelTest, ACursorResumesAfterItsChunkAndIncludesLaterRepliesFromTheirStart) {
  reply("m0", 1, true);  // ended before the cursor's reply began: not again
  reply("m1", 4, true);
  reply("m2", 2, false);
  auto [s, ok] = join(ResumeCursor{"m1", 1}, t0);
  // m2 may have reached the client in part before its cursor's chunk: it starts over
  EXPECT_EQ(texts(s->frames()), (std::vector<std::string>{"m1:2", "m1:3", "m1:done", "again:m2", "m2:0", "m2:1"}));
}

TEST_F(ChannelTest, ARunningReplyWhoseChunksHereAllPredateTheCursorsReplyGoesAgainFromItsStart) {
  // m1 began first and still runs; this pod had m1:0..1 before m2 began. The client's cursor
  // names m2 only, and its old pod may have sent it m1 much further: m1 starts over after a reset,
  // never a chunk the client may already have without one (chaos_short saw such a duplicate).
  reply("m1", 2, false);
  reply("m2", 3, false);
  auto [s, ok] = join(ResumeCursor{"m2", 2}, t0);
  EXPECT_TRUE(ok);
  EXPECT_EQ(texts(s->frames()), (std::vector<std::string>{"again:m1", "m1:0", "m1:1"}));
  channel.publish("m1", 2, frame("m1:2"), 100);
  EXPECT_EQ(texts(s->frames()).back(), "m1:2");
  EXPECT_EQ(texts(s->frames()).size(), 4u);
}

TEST_F(ChannelTest, ACursorOnOneOfTwoInterleavedRepliesGetsTheOtherOneAgainFromItsStart) {
  // The client had m1:0, m2:0, m1:1, m2:1; its cursor names m2 only.
  channel.publish("m1", 0, frame("m1:0"), 100);
  channel.publish("m2", 0, frame("m2:0"), 100);
  channel.publish("m1", 1, frame("m1:1"), 100);
  channel.publish("m2", 1, frame("m2:1"), 100);
  channel.publish("m1", 2, frame("m1:2"), 100);
  auto [s, ok] = join(ResumeCursor{"m2", 1}, t0);
  EXPECT_TRUE(ok);
  EXPECT_EQ(texts(s->frames()), (std::vector<std::string>{"again:m1", "m1:0", "m1:1", "m1:2"}));
  channel.publish("m1", 3, frame("m1:3"), 100);
  channel.publish("m2", 2, frame("m2:2"), 100);
  EXPECT_EQ(texts(s->frames()).back(), "m2:2");
  EXPECT_EQ(texts(s->frames()).size(), 6u);
}

TEST_F(ChannelTest, AResumedStreamGetsAReplyItMayHaveSeenElsewhereFromItsStartAfterAReset) {
  // The stream moved here from a pod that was streaming m9 to it; this pod
  // had only the cursor's reply when it joined, m9 arrives afterwards.
  reply("m1", 2, false);
  auto s = std::make_shared<RecordingSink>("c1", "s1");
  Member m{s, nullptr};
  m.record("m1", 1);
  auto resumed = std::chrono::system_clock::now();
  m.start_resume().resumed_at = resumed;
  m.resume()->settled.insert("m1");
  ASSERT_TRUE(channel.join(std::move(m), ResumeCursor{"m1", 1}, t0, 30s,
                           [](const std::string& id) { return frame("again:" + id); }));
  auto made = [](std::string text, std::chrono::system_clock::time_point at) {
    return std::make_shared<const sse::EncodedFrame>(std::move(text), at);
  };
  channel.publish("m9", 0, made("m9:0", resumed - 2s), 100);
  channel.publish("m9", 1, made("m9:1", resumed - 1s), 100);
  channel.publish("m1", 2, made("m1:2", resumed + 1s), 100);
  channel.publish("m10", 0, made("m10:0", resumed + 1s), 100);  // began after the resume: new to the client
  auto got = texts(s->frames());
  ASSERT_EQ(got.size(), 5u);
  EXPECT_NE(got[0].find("event: reset"), std::string::npos) << got[0];
  EXPECT_NE(got[0].find("m9"), std::string::npos);
  EXPECT_NE(got[0].find("reply_resent"), std::string::npos);
  EXPECT_EQ((std::vector<std::string>(got.begin() + 1, got.end())),
            (std::vector<std::string>{"m9:0", "m9:1", "m1:2", "m10:0"}));
}

TEST_F(ChannelTest, AnOverflowedReplyCannotBeReplayed) {
  for (int i = 0; i < 5; ++i) channel.publish("m1", i, frame("m1:" + std::to_string(i)), 3);
  EXPECT_FALSE(join(std::nullopt, t0).second);
  EXPECT_FALSE(join(ResumeCursor{"m1", 4}, t0).second);
  // The cursor's chunk is kept, but not all that follows it.
  auto [resumed, ok] = join(ResumeCursor{"m1", 1}, t0);
  EXPECT_FALSE(ok);
  EXPECT_TRUE(resumed->frames().empty()) << "no part that ends in a gap";
}

TEST_F(ChannelTest, AStreamThatCaughtUpFromTheLogGetsAResetForARunningReplyThatOverflowed) {
  for (int i = 0; i < 5; ++i) channel.publish("m1", i, frame("m1:" + std::to_string(i)), 3);
  reply("m2", 2, false);
  Member member{std::make_shared<RecordingSink>("c", "s1"), nullptr};
  std::vector<sse::Frame> burst;
  channel.take_running(member, {}, burst);
  ASSERT_EQ(burst.size(), 3u);
  EXPECT_EQ(texts({burst[0], burst[1]}), (std::vector<std::string>{"m2:0", "m2:1"}));
  EXPECT_NE(burst[2]->find("reply_too_long_to_replay"), std::string::npos) << *burst[2];
}

TEST_F(ChannelTest, AFrameReachesEachMemberOnceHoweverOftenItIsPublished) {
  auto [s, ok] = join(std::nullopt, t0);
  channel.publish("m1", 0, frame("a"), 100);
  channel.publish("m1", 0, frame("a again"), 100);
  channel.publish("m1", 1, frame("b"), 100);
  channel.publish("m1", kReplyEnd, frame("end"), 100);
  channel.publish("m1", 1, frame("b after the end"), 100);
  EXPECT_EQ(texts(s->frames()), (std::vector<std::string>{"a", "b", "end"}));
}

TEST_F(ChannelTest, ACatchingUpMemberHoldsLiveFramesUntilItIsDone) {
  Member catching_up{std::make_shared<RecordingSink>("c", "s1"), nullptr};
  catching_up.start_resume().catching_up = true;
  channel.members().push_back(std::move(catching_up));
  channel.publish("m1", 0, frame("live"), 100);
  auto& m = channel.members().back();
  EXPECT_TRUE(std::static_pointer_cast<RecordingSink>(m.stream)->frames().empty());
  ASSERT_EQ(m.resume()->held.size(), 1u);
  EXPECT_EQ(*m.resume()->held[0].frame, "live");
}

TEST_F(ChannelTest, ACatchingUpMemberThatWouldHoldMoreThanTheBoundIsClosedInstead) {
  auto sink = std::make_shared<RecordingSink>("c", "s1");
  Member catching_up{sink, nullptr};
  catching_up.start_resume().catching_up = true;
  channel.members().push_back(std::move(catching_up));
  auto& m = channel.members().back();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(channel.publish("m1", i, frame("live"), 3).streams_cut, 0u);
  EXPECT_FALSE(sink->closed());
  EXPECT_EQ(channel.publish("m1", 3, frame("one too many"), 3).streams_cut, 1u);
  EXPECT_TRUE(sink->closed());
  EXPECT_TRUE(m.cut());
  EXPECT_TRUE(m.resume()->held.empty()) << "what it held is let go at once";
  EXPECT_EQ(channel.publish("m2", 0, frame("later"), 3).streams_cut, 0u) << "cut once, counted once";
  EXPECT_TRUE(m.resume()->held.empty());
  EXPECT_TRUE(sink->frames().empty()) << "closed without a last frame: the client comes back with its cursor";
}

TEST_F(ChannelTest, ARestartResetsTheMembersThatSawTheOldAttempt) {
  auto [saw, ok1] = join(std::nullopt, t0);
  channel.publish("m1", 0, frame("old"), 100);
  auto [late, ok2] = join(std::nullopt, t0);  // gets the old chunk 0 in its burst
  channel.restart("m1", frame("reset"));
  auto [after, ok3] = join(std::nullopt, t0);  // the old attempt's frames are gone
  channel.publish("m1", 0, frame("new"), 100);
  EXPECT_EQ(texts(saw->frames()), (std::vector<std::string>{"old", "reset", "new"}));
  EXPECT_EQ(texts(late->frames()), (std::vector<std::string>{"old", "reset", "new"}));
  EXPECT_EQ(texts(after->frames()), (std::vector<std::string>{"new"}));
}

TEST_F(ChannelTest, DroppingARepliesFramesFreesTheirBytes) {
  reply("m1", 2, true);
  reply("m2", 1, false);
  EXPECT_EQ(channel.drop("m1"), std::string("m1:0").size() * 2 + 7);
  EXPECT_NE(channel.find("m2"), nullptr);
  EXPECT_EQ(channel.find("m1"), nullptr);
}

// An idle stream's channel and member carry no reply state: what a reply
// needed goes with the reply's frames.
TEST_F(ChannelTest, WhatAReplyNeededGoesWhenItIsDropped) {
  auto [s, ok] = join(std::nullopt, t0);
  EXPECT_EQ(channel.members().back().progress, nullptr);
  reply("m1", 2, true);
  EXPECT_NE(channel.members().back().progress, nullptr);
  channel.drop("m1");
  EXPECT_EQ(channel.members().back().progress, nullptr);
  EXPECT_TRUE(channel.remove(s));
  EXPECT_TRUE(channel.idle());
}

// A resumed stream remembers the replies settled for it only while they are here.
TEST_F(ChannelTest, AResumedStreamForgetsASettledReplyWhenItIsDropped) {
  reply("m1", 2, false);
  auto s = std::make_shared<RecordingSink>("c1", "s1");
  Member m{s, nullptr};
  m.record("m1", 1);
  m.start_resume().resumed_at = std::chrono::system_clock::now();
  ASSERT_TRUE(channel.join(std::move(m), ResumeCursor{"m1", 1}, t0, 30s,
                           [](const std::string& id) { return frame("again:" + id); }));
  for (int i = 2; i < 50; ++i) {
    const auto id = "m" + std::to_string(i);
    channel.publish(id, 0, frame(id + ":0"), 100);
    channel.finish(id, t0);
    channel.drop(id);
  }
  EXPECT_LE(channel.members().back().resume()->settled.size(), 1u);
}

TEST_F(ChannelTest, RepliesAfterEveryEarlierOneWasDroppedResumeAsOnAFreshChannel) {
  reply("m1", 2, true);
  channel.drop("m1");
  reply("m2", 2, true);  // ended before m3 began: a cursor on m3 does not bring it again
  reply("m3", 2, false);
  reply("m4", 1, false);
  auto [s, ok] = join(ResumeCursor{"m3", 0}, t0);
  ASSERT_TRUE(ok);
  EXPECT_EQ(texts(s->frames()), (std::vector<std::string>{"m3:1", "again:m4", "m4:0"}));
}

}  // namespace
}  // namespace chat::hub
