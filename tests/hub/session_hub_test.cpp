#include "hub/session_hub.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>

#include <future>
#include <thread>

#include "hub/recording_sink.hpp"

namespace chat::hub {
namespace {

using namespace std::chrono_literals;

protocol::ResponseChunk chunk(std::string session, std::string message, std::uint32_t id, bool final = false) {
  protocol::ResponseChunk c;
  c.session_id = std::move(session);
  c.message_id = std::move(message);
  c.chunk_id = id;
  c.chunk = "x";
  c.is_final = final;
  if (final) c.metadata = protocol::ChunkMetadata{"m", 1, "stop"};
  return c;
}

// A hub on two threads, as in chatd, with its finished replies collected.
struct HubTest : ::testing::Test {
  boost::asio::io_context ioc{2};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work = boost::asio::make_work_guard(ioc);
  std::mutex mutex;  // guards finished: shards call the handler from their strands
  std::vector<std::string> finished;
  SessionHub hub{ioc, [] {
                   HubOptions o;
                   o.shards = 4;
                   return o;
                 }(),
                 ShardHandlers{[this](buffer::FinishedMessage m) {
                                 std::lock_guard lock(mutex);
                                 finished.push_back(m.message_id);
                               },
                               [](const std::string&, const std::string&) {},
                               [](const std::string&, const std::string&, const sse::ResumeCursor&) {},
                               [] { return std::uint64_t{0}; }}};
  std::vector<std::thread> threads;

  void SetUp() override {
    hub.start();
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { ioc.run(); });
  }
  void TearDown() override {
    work.reset();
    ioc.stop();
    for (auto& t : threads) t.join();
  }

  template <class Pred>
  static bool eventually(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }

  // A stream for each of the sessions s0..s15.
  std::vector<std::shared_ptr<RecordingSink>> attach_sessions() {
    std::vector<std::shared_ptr<RecordingSink>> streams;
    for (int s = 0; s < 16; ++s) {
      streams.push_back(std::make_shared<RecordingSink>("c" + std::to_string(s), "s" + std::to_string(s)));
      hub.attach(streams.back());
    }
    return streams;
  }

  // Reply m<s> of session s<s> in five chunks, the sessions' chunks taking turns.
  static std::vector<protocol::ResponseChunk> replies_interleaved() {
    std::vector<protocol::ResponseChunk> chunks;
    for (std::uint32_t i = 0; i < 5; ++i)
      for (int s = 0; s < 16; ++s) chunks.push_back(chunk("s" + std::to_string(s), "m" + std::to_string(s), i, i == 4));
    return chunks;
  }

  // Each stream got its session's reply in order (five chunks and its end), and every reply finished.
  void expect_each_reply_delivered(const std::vector<std::shared_ptr<RecordingSink>>& streams) {
    for (int s = 0; s < 16; ++s) {
      auto m = "m" + std::to_string(s);
      ASSERT_TRUE(eventually([&] { return streams[s]->events().size() == 6; })) << s;
      EXPECT_EQ(streams[s]->chunk_ids(), (std::vector<std::string>{m + ":0", m + ":1", m + ":2", m + ":3", m + ":4"}));
    }
    EXPECT_TRUE(eventually([&] {
      std::lock_guard lock(mutex);
      return finished.size() == 16;
    }));
  }
};

TEST_F(HubTest, EachSessionsChunksReachItsStreamsAcrossShards) {
  auto streams = attach_sessions();
  for (auto& c : replies_interleaved()) hub.on_chunks({std::move(c)}, false);
  ASSERT_NO_FATAL_FAILURE(expect_each_reply_delivered(streams));
  EXPECT_EQ(hub.stats().streams, 16u);
  EXPECT_EQ(hub.stats().sessions, 16u);
}

// A burst from the bus: one hand-off per shard, each session's chunks in order.
TEST_F(HubTest, ChunksHandedOverTogetherReachEachSessionsStreams) {
  auto streams = attach_sessions();
  hub.on_chunks(replies_interleaved(), false);
  ASSERT_NO_FATAL_FAILURE(expect_each_reply_delivered(streams));
}

// 16 sessions on 4 shards: most of them on another shard than the reply's.
TEST_F(HubTest, NoChunkMovesAReplyIntoAnotherSessionOnAnyShardDuringOrAfterIt) {
  auto streams = attach_sessions();
  hub.on_chunks({chunk("s0", "m0", 0)}, false);
  ASSERT_TRUE(eventually([&] { return streams[0]->events().size() == 1; }));  // the reply is s0's from here
  for (int s = 1; s < 16; ++s) hub.on_chunks({chunk("s" + std::to_string(s), "m0", 1)}, false);
  hub.on_chunks({chunk("s0", "m0", 1, true)}, false);
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return finished.size() == 1;
  }));
  for (int s = 1; s < 16; ++s) hub.on_chunks({chunk("s" + std::to_string(s), "m0", 0)}, false);
  ASSERT_TRUE(eventually([&] { return streams[0]->events().size() == 3; }));
  // A reply of each session's own, after everything above on its shard.
  for (int s = 1; s < 16; ++s) hub.on_chunks({chunk("s" + std::to_string(s), "r" + std::to_string(s), 0, true)}, false);
  for (int s = 1; s < 16; ++s) {
    ASSERT_TRUE(eventually([&] { return !streams[s]->chunk_ids().empty() && streams[s]->chunk_ids().back()[0] == 'r'; }));
    EXPECT_EQ(streams[s]->chunk_ids(), std::vector<std::string>{"r" + std::to_string(s) + ":0"}) << "session " << s;
  }
  EXPECT_EQ(streams[0]->chunk_ids(), (std::vector<std::string>{"m0:0", "m0:1"}));
}

TEST_F(HubTest, SettledWaitsForEveryAcceptedReply) {
  hub.expect("s1", "m1");
  hub.expect("s2", "m2");
  std::promise<void> settled;
  hub.when_settled([&] { settled.set_value(); });
  auto future = settled.get_future();
  hub.on_chunks({chunk("s1", "m1", 0, true)}, false);
  EXPECT_EQ(future.wait_for(200ms), std::future_status::timeout) << "m2 is still owed";
  hub.on_chunks({chunk("s2", "m2", 0, true)}, false);
  EXPECT_EQ(future.wait_for(10s), std::future_status::ready);
}

TEST_F(HubTest, SettledAtOnceWhenNothingIsOwed) {
  std::promise<void> settled;
  hub.when_settled([&] { settled.set_value(); });
  EXPECT_EQ(settled.get_future().wait_for(10s), std::future_status::ready);
}

TEST_F(HubTest, CloseAllSendsTheLastFrameAndReportsWhenEveryStreamLeft) {
  auto a = std::make_shared<RecordingSink>("a", "s1");
  auto b = std::make_shared<RecordingSink>("b", "s2");
  hub.attach(a);
  hub.attach(b);
  ASSERT_TRUE(eventually([&] { return hub.stats().streams == 2; }));
  std::promise<void> closed;
  hub.close_all([] { return sse::retry_frame(1s); }, [&] { closed.set_value(); });
  auto future = closed.get_future();
  ASSERT_TRUE(eventually([&] { return a->closed() && b->closed(); }));
  EXPECT_EQ(*a->frames().back(), "retry: 1000\n\n");
  EXPECT_EQ(future.wait_for(100ms), std::future_status::timeout) << "the streams have not left yet";
  // A closed connection detaches itself, as an SseConnection does from its closed handler.
  hub.detach(a);
  hub.detach(b);
  EXPECT_EQ(future.wait_for(10s), std::future_status::ready);
}

TEST_F(HubTest, EndSessionReportsTheRunningRepliesOnce) {
  hub.expect("s1", "m1");
  hub.expect("s1", "m2");
  std::promise<std::vector<std::string>> dropped;
  hub.end_session("s1", [&](std::vector<std::string> ids) { dropped.set_value(std::move(ids)); });
  auto ids = dropped.get_future().get();
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"m1", "m2"}));
}

// A hub whose event loop runs only when the test says so: what a caller's
// thread does itself and what waits for the strands tells apart.
struct IdleHubTest : ::testing::Test {
  boost::asio::io_context ioc{1};
  SessionHub hub{ioc, HubOptions{},
                 ShardHandlers{[](buffer::FinishedMessage) {}, [](const std::string&, const std::string&) {},
                               [](const std::string&, const std::string&, const sse::ResumeCursor&) {},
                               [] { return std::uint64_t{0}; }}};
  std::shared_ptr<RecordingSink> stream = std::make_shared<RecordingSink>("c1", "s1");

  void SetUp() override {
    hub.attach(stream);
    run_strands();
  }
  // What was posted to the strands runs (the loop stops each time it runs out of work).
  void run_strands() {
    ioc.restart();
    ioc.poll();
  }
  std::vector<protocol::ResponseChunk> reply(std::string message) { return {chunk("s1", std::move(message), 0, true)}; }
};

// The bus's delivery thread with nothing queued behind a burst: an idle shard
// runs it there, and the stream has it before any event-loop thread ran.
TEST_F(IdleHubTest, AnIdleShardTakesTheBurstOnTheCallersThread) {
  hub.on_chunks(reply("m1"), false, SessionHub::RunOn::caller_if_idle);
  EXPECT_EQ(stream->chunk_ids(), (std::vector<std::string>{"m1:0"}));
  hub.on_chunks(reply("m2"), false);
  EXPECT_EQ(stream->chunk_ids(), (std::vector<std::string>{"m1:0"})) << "posted to the strand";
  run_strands();
  EXPECT_EQ(stream->chunk_ids(), (std::vector<std::string>{"m1:0", "m2:0"}));
}

// A run still waiting for the shard goes first: the burst waits behind it.
TEST_F(IdleHubTest, ABurstDoesNotOvertakeARunWaitingForTheShard) {
  hub.on_chunks(reply("m1"), false);
  hub.on_chunks(reply("m2"), false, SessionHub::RunOn::caller_if_idle);
  EXPECT_TRUE(stream->chunk_ids().empty());
  run_strands();
  EXPECT_EQ(stream->chunk_ids(), (std::vector<std::string>{"m1:0", "m2:0"}));
}

// One shard that holds one buffer, so that each new reply evicts the one before.
struct CrowdedHubTest : ::testing::Test {
  boost::asio::io_context ioc{1};
  std::vector<std::string> stored;  // the strands run on this thread only (poll)
  SessionHub hub{ioc, [] {
                   HubOptions o;
                   o.shards = 1;
                   o.buffer.max_buffers = 1;
                   return o;
                 }(),
                 ShardHandlers{[this](buffer::FinishedMessage m) { stored.push_back(m.message_id); },
                               [](const std::string&, const std::string&) {},
                               [](const std::string&, const std::string&, const sse::ResumeCursor&) {},
                               [] { return std::uint64_t{0}; }}};
  std::shared_ptr<RecordingSink> stream = std::make_shared<RecordingSink>("c1", "s1");

  void run_strands() {
    ioc.restart();
    ioc.poll();
  }
};

// Another pod accepted m1, m2 and m4 and stores them whole; this pod's
// cut-short copies must not be written first. A reply accepted here is never
// pushed out by another pod's, and is stored whatever ends it.
TEST_F(CrowdedHubTest, AnEvictedReplyIsStoredOnlyByThePodThatAcceptedIt) {
  hub.attach(stream);
  hub.on_chunks({chunk("s1", "m1", 0)}, false);
  hub.on_chunks({chunk("s1", "m2", 0)}, false);  // evicts m1
  run_strands();
  EXPECT_TRUE(stored.empty());
  EXPECT_EQ(stream->events(), (std::vector<std::string>{"chunk", "error", "message_complete", "chunk"}))
      << "the evicted reply still ends on the streams watching it";
  hub.expect("s1", "m3");                        // accepted here: evicts m2
  hub.on_chunks({chunk("s1", "m4", 0)}, false);  // another pod's: cannot push m3 out
  run_strands();
  EXPECT_TRUE(stored.empty());
  hub.on_chunks({chunk("s1", "m3", 0, true)}, false);
  run_strands();
  EXPECT_EQ(stored, (std::vector<std::string>{"m3"}));
  EXPECT_EQ(stream->chunk_ids(), (std::vector<std::string>{"m1:0", "m2:0", "m3:0"}));
}

}  // namespace
}  // namespace chat::hub
