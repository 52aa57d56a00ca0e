#include "buffer/message_buffer.hpp"

#include <gtest/gtest.h>

#include <limits>

namespace chat::buffer {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kNoByteLimit = std::numeric_limits<std::size_t>::max();

protocol::ResponseChunk chunk(std::uint32_t id, bool final = false) {
  protocol::ResponseChunk c;
  c.session_id = "s1";
  c.message_id = "m1";
  c.chunk_id = id;
  c.chunk = "c" + std::to_string(id) + " ";
  c.is_final = final;
  return c;
}

std::vector<std::uint32_t> ids(const std::vector<protocol::ResponseChunk>& chunks) {
  std::vector<std::uint32_t> out;
  for (const auto& c : chunks) out.push_back(c.chunk_id);
  return out;
}

struct MessageBufferTest : ::testing::Test {
  SteadyTime t0 = std::chrono::steady_clock::now();
  MessageBuffer buffer{"s1", "m1", t0};
  std::vector<protocol::ResponseChunk> released;

  PushResult push(std::uint32_t id, bool final = false, SteadyTime at = {}) {
    return buffer.push(chunk(id, final), at == SteadyTime{} ? t0 : at, 10'000, kNoByteLimit, released);
  }
};

TEST_F(MessageBufferTest, InOrderChunksAreReleasedAtOnce) {
  push(0);
  push(1);
  push(2, true);
  EXPECT_EQ(ids(released), (std::vector<std::uint32_t>{0, 1, 2}));
  EXPECT_TRUE(buffer.finished());
  EXPECT_EQ(buffer.content(), "c0 c1 c2 ");
}

TEST_F(MessageBufferTest, TheIssueOrderThreeOneFourZeroFiveFinalTwo) {
  push(3);
  push(1);
  push(4);
  EXPECT_TRUE(released.empty());
  push(0);
  EXPECT_EQ(ids(released), (std::vector<std::uint32_t>{0, 1}));
  push(5, true);
  EXPECT_EQ(ids(released), (std::vector<std::uint32_t>{0, 1}));
  EXPECT_FALSE(buffer.finished());
  push(2);
  EXPECT_EQ(ids(released), (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(buffer.finished());
  EXPECT_EQ(buffer.content(), "c0 c1 c2 c3 c4 c5 ");
}

TEST_F(MessageBufferTest, DuplicatesAreDroppedAndTheFirstCopyWins) {
  auto first = chunk(1);
  first.chunk = "first";
  buffer.push(first, t0, 100, kNoByteLimit, released);
  auto second = chunk(1);
  second.chunk = "second";
  EXPECT_EQ(buffer.push(second, t0, 100, kNoByteLimit, released), PushResult::duplicate);
  push(0);
  EXPECT_EQ(push(0), PushResult::duplicate);  // already released
  ASSERT_EQ(released.size(), 2u);
  EXPECT_EQ(released[1].chunk, "first");
}

TEST_F(MessageBufferTest, ChunksAfterTheFinalOneAreRejected) {
  push(0);
  push(1, true);
  EXPECT_EQ(push(2), PushResult::after_final);
  EXPECT_EQ(push(1, true), PushResult::duplicate);
}

TEST_F(MessageBufferTest, AFinalBelowAHeldChunkIsRejected) {
  push(4);
  EXPECT_EQ(push(2, true), PushResult::after_final);
}

TEST_F(MessageBufferTest, ChunkIdsBeyondTheLimitAreRejected) {
  EXPECT_EQ(buffer.push(chunk(5), t0, 5, kNoByteLimit, released), PushResult::over_limit);
  EXPECT_EQ(buffer.push(chunk(4), t0, 5, kNoByteLimit, released), PushResult::released_or_held);
}

TEST_F(MessageBufferTest, AWaitingChunkCountsAsItCameAndNotOnceReleased) {
  auto waiting = chunk(1);
  waiting.wire = std::string(1000, 'w');  // the JSON kept to forward as it came
  EXPECT_EQ(buffer.push(waiting, t0, 100, kNoByteLimit, released), PushResult::released_or_held);
  EXPECT_GE(buffer.footprint(), 1000u + waiting.chunk.size());
  EXPECT_EQ(buffer.push(chunk(0), t0, 100, kNoByteLimit, released), PushResult::released_or_held);
  EXPECT_EQ(buffer.footprint(), buffer.content().size()) << "released: only the text for the store stays";
}

TEST_F(MessageBufferTest, WithoutRoomToHoldOnlyTheDueChunkIsTaken) {
  EXPECT_EQ(buffer.push(chunk(1), t0, 100, kNoByteLimit, released, false), PushResult::no_room);
  EXPECT_EQ(buffer.push(chunk(0), t0, 100, kNoByteLimit, released, false), PushResult::released_or_held);
  EXPECT_EQ(buffer.push(chunk(2), t0, 100, kNoByteLimit, released, true), PushResult::released_or_held);  // held
  EXPECT_EQ(buffer.push(chunk(1), t0, 100, kNoByteLimit, released, false), PushResult::released_or_held)
      << "the due chunk releases what waits";
  EXPECT_EQ(ids(released), (std::vector<std::uint32_t>{0, 1, 2}));
}

TEST_F(MessageBufferTest, AGapIsSkippedOnlyAfterTheTimeout) {
  push(0);
  push(3);
  push(4, true);
  EXPECT_TRUE(buffer.skip_expired_gap(t0 + 29s, 30s, released).empty());
  auto missing = buffer.skip_expired_gap(t0 + 30s, 30s, released);
  EXPECT_EQ(missing, (std::vector<std::uint32_t>{1, 2}));
  EXPECT_EQ(ids(released), (std::vector<std::uint32_t>{0, 3, 4}));
  EXPECT_TRUE(buffer.finished());
  EXPECT_EQ(buffer.skipped_ids(), (std::vector<std::uint32_t>{1, 2}));
}

TEST_F(MessageBufferTest, NoGapMeansNothingToSkip) {
  push(0);
  EXPECT_TRUE(buffer.skip_expired_gap(t0 + 1h, 30s, released).empty());
}

TEST_F(MessageBufferTest, AGapThatClosesInTimeIsNotSkipped) {
  push(2);
  push(0, false, t0 + 10s);
  push(1, false, t0 + 20s);
  EXPECT_TRUE(buffer.skip_expired_gap(t0 + 31s, 30s, released).empty());
  EXPECT_EQ(ids(released), (std::vector<std::uint32_t>{0, 1, 2}));
}

}  // namespace
}  // namespace chat::buffer
