#include "hub/session_channel.hpp"

#include <gtest/gtest.h>

namespace chat::hub {
namespace {

using namespace std::chrono_literals;

sse::Frame frame(std::string text) { return std::make_shared<const std::string>(std::move(text)); }

std::vector<std::string> texts(const std::vector<sse::Frame>& frames) {
  std::vector<std::string> out;
  for (const auto& f : frames) out.push_back(*f);
  return out;
}

struct ChannelTest : ::testing::Test {
  Channel channel;
  SteadyTime t0 = std::chrono::steady_clock::now();

  void reply(const std::string& id, int chunks, bool finish) {
    for (int i = 0; i < chunks; ++i) channel.publish(id, i, frame(id + ":" + std::to_string(i)), 100);
    if (finish) {
      channel.publish(id, kNotAChunk, frame(id + ":done"), 100);
      channel.finish(id, t0);
    }
  }
};

TEST_F(ChannelTest, AFreshStreamGetsRunningRepliesFromChunkZero) {
  reply("m1", 2, false);
  auto plan = channel.plan_join(std::nullopt, t0, 30s);
  EXPECT_EQ(texts(plan.frames), (std::vector<std::string>{"m1:0", "m1:1"}));
  EXPECT_FALSE(plan.reset);
}

TEST_F(ChannelTest, AFinishedReplyNobodySawIsGivenToALateStreamWithinTheWindow) {
  reply("m1", 1, true);
  EXPECT_EQ(texts(channel.plan_join(std::nullopt, t0 + 1s, 30s).frames), (std::vector<std::string>{"m1:0", "m1:done"}));
  // Seen now: a second device does not get it again.
  EXPECT_TRUE(channel.plan_join(std::nullopt, t0 + 2s, 30s).frames.empty());
}

TEST_F(ChannelTest, AFinishedReplyIsNotReplayedAfterTheLateJoinWindow) {
  reply("m1", 1, true);
  EXPECT_TRUE(channel.plan_join(std::nullopt, t0 + 31s, 30s).frames.empty());
}

TEST_F(ChannelTest, ACursorResumesAfterItsChunkAndIncludesLaterReplies) {
  reply("m1", 4, true);
  reply("m2", 2, false);
  auto plan = channel.plan_join(ResumeCursor{"m1", 1}, t0, 30s);
  EXPECT_EQ(texts(plan.frames), (std::vector<std::string>{"m1:2", "m1:3", "m1:done", "m2:0", "m2:1"}));
}

TEST_F(ChannelTest, AnOverflowedReplyCannotBeReplayed) {
  for (int i = 0; i < 5; ++i) channel.publish("m1", i, frame("x"), 3);
  auto plan = channel.plan_join(std::nullopt, t0, 30s);
  EXPECT_TRUE(plan.reset);
  EXPECT_TRUE(channel.plan_join(ResumeCursor{"m1", 4}, t0, 30s).reset);
}

TEST_F(ChannelTest, DroppingFinishedRepliesFreesTheirBytes) {
  reply("m1", 2, true);
  reply("m2", 1, false);
  EXPECT_EQ(channel.drop_finished_if([](const Backlog&) { return true; }), std::string("m1:0").size() * 2 + 7);
  EXPECT_NE(channel.find("m2"), nullptr);
  EXPECT_EQ(channel.find("m1"), nullptr);
}

}  // namespace
}  // namespace chat::hub
