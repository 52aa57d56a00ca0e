#include "sse/sse_connection.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/strand.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <iostream>
#include <thread>

namespace chat::sse {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

// A connection over real loopback sockets: the server side runs on an
// io_context thread; the test reads and writes the client side directly.
struct SseConnectionTest : ::testing::Test {
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(ioc);
  std::thread thread{[this] { ioc.run(); }};
  asio::io_context client_ioc;
  tcp::socket client{client_ioc};
  std::promise<std::string> closed_reason;
  std::shared_future<std::string> closed = closed_reason.get_future().share();
  StreamMetrics metrics;
  StreamContext context{{}, &metrics, [this](const std::shared_ptr<SseConnection>&, std::string_view reason) {
                          closed_reason.set_value(std::string(reason));
                        }};  // the connection keeps a reference, as to the pod's
  std::shared_ptr<SseConnection> connection;

  void open(QueueLimits stream_limits = {}, std::vector<Frame> first = {}, std::size_t client_receive_buffer = 0) {
    context.limits = stream_limits;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    if (client_receive_buffer) {
      client.open(tcp::v4());
      client.set_option(asio::socket_base::receive_buffer_size(static_cast<int>(client_receive_buffer)));
    }
    client.connect(acceptor.local_endpoint());
    tcp::socket server(asio::make_strand(ioc));
    acceptor.accept(server);
    connection = std::make_shared<SseConnection>(std::move(server), CompactId(1), "s1", context);
    connection->start("HEAD\r\n\r\n", std::move(first));
  }

  // Opens a stream and waits until its first write has completed on the strand
  // (the client seeing the bytes is not enough: the completion may still be
  // queued), so that the stream is idle: nothing queued, nothing in flight.
  void open_idle() {
    open({}, {make_frame("first", "{}", {}, std::chrono::system_clock::now())});
    read_until("event: first");
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (metrics.delivery.snapshot().count == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    ASSERT_EQ(metrics.delivery.snapshot().count, 1u) << "the first write never completed";
  }

  // Reads until `text` has arrived (or the stream ends); returns everything read.
  std::string read_until(const std::string& text) {
    std::string got;
    char buf[4096];
    while (got.find(text) == std::string::npos) {
      boost::system::error_code ec;
      auto n = client.read_some(asio::buffer(buf), ec);
      if (ec) break;
      got.append(buf, n);
    }
    return got;
  }

  std::string reason() {
    if (closed.wait_for(10s) != std::future_status::ready) return "not closed";
    return closed.get();
  }

  void TearDown() override {
    work.reset();
    ioc.stop();
    thread.join();
  }
};

Frame frame(std::string text) { return sse::raw_frame(std::move(text)); }

TEST_F(SseConnectionTest, TheHeadAndFirstFramesGoOutFirstThenLiveFramesInOrder) {
  open({}, {frame("first\n\n")});
  for (int i = 0; i < 50; ++i) connection->send(frame("f" + std::to_string(i) + "\n\n"));
  auto got = read_until("f49\n\n");
  std::string want = "HEAD\r\n\r\nfirst\n\n";
  for (int i = 0; i < 50; ++i) want += "f" + std::to_string(i) + "\n\n";
  EXPECT_EQ(got, want);
}

// Holds the connection's only event-loop thread until release() (or the end of the test).
struct HeldLoop {
  explicit HeldLoop(asio::io_context& ioc) {
    std::promise<void> holding;
    // The loop waits on its own copy of the future: this object may be gone by the time it wakes.
    asio::post(ioc, [&holding, release = released.get_future().share()] {
      holding.set_value();
      release.wait();
    });
    holding.get_future().wait();
  }
  ~HeldLoop() { release(); }
  void release() {
    if (!done) released.set_value();
    done = true;
  }
  std::promise<void> released;
  bool done = false;
};

// What arrives on `client` (up to `enough` bytes) before a read waits `limit`:
// raw reads, so that a read that would wait for a held loop ends instead of hanging.
std::string received_within(tcp::socket& client, std::chrono::milliseconds limit, std::size_t enough = 1 << 20) {
  timeval tv{static_cast<time_t>(limit.count() / 1000), static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
  ::setsockopt(client.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[64];
  while (got.size() < enough) {
    auto n = ::recv(client.native_handle(), buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

TEST_F(SseConnectionTest, ALiveFrameForAnIdleStreamIsWrittenByTheSenderWithoutTheEventLoop) {
  open_idle();
  HeldLoop held(ioc);  // the frame can arrive only if send() writes it itself
  {
    WriteNowScope write_now(true);
    connection->send(frame("live\n\n"));
  }
  EXPECT_EQ(received_within(client, 2s, 6), "live\n\n");
}

TEST_F(SseConnectionTest, OutsideAWriteNowScopeAFrameWaitsForTheStrand) {
  open_idle();
  HeldLoop held(ioc);
  connection->send(frame("queued\n\n"));
  EXPECT_EQ(received_within(client, 300ms), "");
  held.release();
  EXPECT_EQ(received_within(client, 5s, 8), "queued\n\n");
}

TEST_F(SseConnectionTest, WhatTheKernelDoesNotTakeAtOnceFollowsInOrder) {
  QueueLimits roomy;
  roomy.max_bytes = 8 * 1024 * 1024;
  open(roomy, {}, 4096);
  read_until("HEAD\r\n\r\n");
  std::string big(2 * 1024 * 1024, 'b');  // far more than both kernel buffers
  WriteNowScope write_now(true);
  connection->send(frame(big));
  connection->send(frame("after\n\n"));
  auto got = read_until("after\n\n");
  EXPECT_TRUE(got == big + "after\n\n") << got.size() << " bytes, " << std::count(got.begin(), got.end(), 'b')
                                        << " of the big frame's " << big.size();
}

TEST_F(SseConnectionTest, CloseWritesTheLastFrameThenEndsTheStream) {
  open();
  connection->send(frame("a\n\n"));
  connection->close(frame("retry: 5\n\n"));
  connection->send(frame("after close\n\n"));
  auto got = read_until("never");
  EXPECT_EQ(got, "HEAD\r\n\r\na\n\nretry: 5\n\n");
  EXPECT_EQ(reason(), "closed_by_server");
}

// A stream closed by the server (its session deleted) with a client that
// stopped reading: the stall rule still ends it.
TEST_F(SseConnectionTest, AClosingStreamWhoseClientStoppedReadingIsCut) {
  open(QueueLimits{1'000'000, 64 * 1024 * 1024, 4096, 200ms}, {}, 4096);
  std::string kb(1024, 'x');
  kb += "\n\n";
  for (int i = 0; i < 2048; ++i) connection->send(frame(kb));  // more than the kernel's buffers hold
  connection->close(frame("event: reset\ndata: {}\n\n"));
  EXPECT_EQ(reason(), "slow_client");
}

TEST_F(SseConnectionTest, AClientThatGoesAwayIsNoticedWithoutAWrite) {
  open();
  read_until("HEAD\r\n\r\n");
  client.close();
  EXPECT_EQ(reason(), "client_closed");
}

TEST_F(SseConnectionTest, AClientThatStopsReadingIsCutAtTheByteLimit) {
  open(QueueLimits{1'000'000, 64 * 1024, 4096, 1'000ms}, {}, 4096);
  std::string kb(1024, 'x');
  kb += "\n\n";
  // Far more than the kernel buffers and the queue limit hold together.
  for (int i = 0; i < 4096 && closed.wait_for(0s) != std::future_status::ready; ++i) connection->send(frame(kb));
  EXPECT_EQ(reason(), "slow_client");
}

TEST_F(SseConnectionTest, AClientThatFellBehindButKeepsReadingIsNotCut) {
  open(QueueLimits{4, 4 * 1024 * 1024, 4096, 600ms}, {}, 4096);
  std::string line(200, 'x');
  line += "\n\n";
  // 300 KB pile up while the client is away: far more than the kernel holds,
  // and more than the client reads within the grace.
  for (int i = 0; i < 1500; ++i) connection->send(frame(line));
  connection->send(frame("end of burst\n\n"));
  std::this_thread::sleep_for(100ms);
  std::atomic<bool> reading{true};
  std::thread ticker([&] {
    // Live frames keep coming, so the connection keeps judging the client.
    for (int i = 0; reading && closed.wait_for(50ms) != std::future_status::ready; ++i)
      connection->send(frame("tick" + std::to_string(i) + "\n\n"));
  });
  std::string got;
  char buf[8192];
  while (got.find("end of burst") == std::string::npos) {
    boost::system::error_code ec;
    auto n = client.read_some(asio::buffer(buf), ec);  // a few hundred KB/s
    if (ec) break;
    got.append(buf, n);
    std::this_thread::sleep_for(10ms);
  }
  reading = false;
  ticker.join();
  EXPECT_NE(got.find("end of burst"), std::string::npos);
  EXPECT_EQ(closed.wait_for(0s), std::future_status::timeout) << "cut while it was reading: " << reason();
}

TEST_F(SseConnectionTest, ABacklogBurstIsExemptFromTheEventLimit) {
  open(QueueLimits{4, 1024 * 1024, 512 * 1024, 50ms});
  std::vector<Frame> backlog;
  for (int i = 0; i < 200; ++i) backlog.push_back(frame("b" + std::to_string(i) + "\n\n"));
  connection->send_backlog(backlog);
  connection->send(frame("live\n\n"));
  auto got = read_until("live\n\n");
  EXPECT_NE(got.find("b199\n\nlive\n\n"), std::string::npos);
  EXPECT_EQ(closed.wait_for(100ms), std::future_status::timeout) << "cut for a server-chosen burst";
}

Frame content_chunk(std::uint32_t id, std::string text) {
  protocol::ResponseChunk c;
  c.session_id = "s1";
  c.message_id = "m1";
  c.chunk_id = id;
  c.chunk = std::move(text);
  c.timestamp = "2026-11-30T00:00:00Z";
  return chunk_frame(c);
}

struct ChunkEvent {
  std::string id;
  std::uint32_t first_chunk_id;  // the first chunk whose text it carries
  std::uint32_t chunk_id;
  std::string text;
};

// The chunk events in `stream`, in order.
std::vector<ChunkEvent> chunk_events(const std::string& stream) {
  std::vector<ChunkEvent> events;
  for (std::size_t pos = 0; (pos = stream.find("event: chunk\n", pos)) != std::string::npos;) {
    auto id_start = stream.rfind("id: ", pos) + 4;
    auto id = stream.substr(id_start, stream.find('\n', id_start) - id_start);
    auto data_start = stream.find("data: ", pos) + 6;
    auto data = boost::json::parse(stream.substr(data_start, stream.find('\n', data_start) - data_start)).as_object();
    auto chunk_id = static_cast<std::uint32_t>(data.at("chunk_id").as_int64());
    auto first = data.contains("first_chunk_id") ? static_cast<std::uint32_t>(data.at("first_chunk_id").as_int64())
                                                 : chunk_id;
    events.push_back({id, first, chunk_id, std::string(data.at("chunk").as_string())});
    pos = data_start;
  }
  return events;
}

TEST_F(SseConnectionTest, ASlowReaderGetsFewerLargerEventsWithTheWholeTextAndExactIds) {
  open(QueueLimits{1'024, 8 * 1024 * 1024, 4'096, 10s, 8}, {}, 4'096);
  std::string want;
  std::size_t uncoalesced_bytes = 0;
  constexpr std::uint32_t kChunks = 3'000;
  for (std::uint32_t i = 0; i < kChunks; ++i) {
    auto text = "word" + std::to_string(i) + " ";
    want += text;
    auto f = content_chunk(i, text);
    uncoalesced_bytes += f->size();
    connection->send(std::move(f));
  }
  connection->send(frame("event: message_complete\ndata: {}\n\n"));
  auto stream = read_until("message_complete");
  auto events = chunk_events(stream);
  ASSERT_FALSE(events.empty());
  std::string text;
  std::int64_t previous = -1;
  for (const auto& e : events) {
    EXPECT_EQ(static_cast<std::int64_t>(e.first_chunk_id), previous + 1) << "every chunk once, in order";
    EXPECT_GE(e.chunk_id, e.first_chunk_id);
    EXPECT_EQ(e.id, "m1:" + std::to_string(e.chunk_id)) << "the event id is the last merged chunk's";
    previous = e.chunk_id;
    text += e.text;
  }
  std::cout << "slow reader: " << events.size() << " chunk events, " << stream.size() << " bytes; without coalescing "
            << kChunks << " events, " << uncoalesced_bytes << " bytes\n";
  EXPECT_EQ(text, want);
  EXPECT_EQ(events.back().chunk_id, kChunks - 1);
  EXPECT_LT(events.size(), kChunks / 2) << "a client this far behind should get merged events";
  EXPECT_EQ(metrics.coalesced.value(), kChunks - events.size());
  EXPECT_EQ(closed.wait_for(0s), std::future_status::timeout) << "cut instead of coalesced: " << reason();
}

// Merged chunks count as the events they were: a client that stopped reading
// is cut by the stall rule, not kept to the byte limit by merging.
TEST_F(SseConnectionTest, AClientThatStoppedReadingIsCutEvenWhileItsChunksMerge) {
  constexpr auto kGrace = 2s;  // long, so that a loaded machine cannot cut the stream before the test means to
  // Chunks merge as soon as one event waits: whatever the stuck batch holds,
  // the chunks sent after the grace merge into the event queued behind it.
  open(QueueLimits{64, 8 * 1024 * 1024, 4'096, kGrace, 1}, {}, 4'096);
  std::uint32_t id = 0;
  for (; id < 1'000; ++id) connection->send(content_chunk(id, std::to_string(id) + std::string(100, 'x')));
  // The kernel's buffers are full once no write completes any more: from then
  // on the strand's batch is stuck and its stall clock runs.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  for (auto seen = metrics.delivery.snapshot().count; std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(200ms);
    auto now = metrics.delivery.snapshot().count;
    if (now == seen) break;
    seen = now;
  }
  ASSERT_EQ(closed.wait_for(0s), std::future_status::timeout) << "cut before the test's stall: " << reason();
  // Queued behind the stuck batch, within the grace: a frame no chunk merges
  // into, then the new event the chunks below merge into, 5 bytes each, so
  // that it would take them 30 s to reach the 16 KiB cap and start an event
  // that does not merge. (The kernel may still take a little more after a
  // pause: then the batch is taken again and its stall clock restarts; a
  // chunk finding the queue empty then is what cuts the stream.)
  connection->send(frame(": stuck\n\n"));
  connection->send(content_chunk(id++, "more "));
  std::this_thread::sleep_for(kGrace + 200ms);
  for (auto until = id + 400; id < until && closed.wait_for(10ms) != std::future_status::ready; ++id)
    connection->send(content_chunk(id, "more "));
  EXPECT_EQ(reason(), "slow_client");
  EXPECT_GT(metrics.coalesced.value(), 0u) << "the chunks did merge";
}

// Merging parses the event it grows: an event stops growing at 16 KiB, so a
// long reply to a slow client costs the producer linear time, not quadratic.
TEST_F(SseConnectionTest, AMergedEventStopsGrowingAndTheNextChunkStartsAnother) {
  open(QueueLimits{1'000'000, 64 * 1024 * 1024, 4'096, 10s, 8}, {}, 4'096);
  std::string want;
  const std::string word(100, 'x');
  constexpr std::uint32_t kChunks = 2'000;  // 200 KB of text
  for (std::uint32_t i = 0; i < kChunks; ++i) {
    want += word;
    connection->send(content_chunk(i, word));
  }
  connection->send(frame("event: message_complete\ndata: {}\n\n"));
  auto events = chunk_events(read_until("message_complete"));
  std::string text;
  for (const auto& e : events) {
    EXPECT_LE(e.text.size(), 17u * 1024) << "chunk " << e.chunk_id;
    text += e.text;
  }
  EXPECT_EQ(text, want);
  EXPECT_GE(events.size(), want.size() / (16 * 1024));
}

TEST_F(SseConnectionTest, AReaderThatKeepsUpGetsEveryChunkAsItsOwnEvent) {
  open(QueueLimits{1'024, 8 * 1024 * 1024, 4'096, 10s, 8});
  std::string got;
  for (std::uint32_t i = 0; i < 50; ++i) {
    connection->send(content_chunk(i, "w" + std::to_string(i)));
    got += read_until("m1:" + std::to_string(i) + "\n");
  }
  connection->send(frame("end\n\n"));
  got += read_until("end\n\n");
  auto events = chunk_events(got);
  ASSERT_EQ(events.size(), 50u);
  for (std::uint32_t i = 0; i < 50; ++i) EXPECT_EQ(events[i].chunk_id, i);
  EXPECT_EQ(metrics.coalesced.value(), 0u);
}

}  // namespace
}  // namespace chat::sse
