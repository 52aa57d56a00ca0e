#include "sse/sse_connection.hpp"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <future>
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
  std::shared_ptr<SseConnection> connection;

  void open(QueueLimits limits = {}, std::vector<Frame> first = {}, std::size_t client_receive_buffer = 0) {
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    if (client_receive_buffer) {
      client.open(tcp::v4());
      client.set_option(asio::socket_base::receive_buffer_size(static_cast<int>(client_receive_buffer)));
    }
    client.connect(acceptor.local_endpoint());
    tcp::socket server(asio::make_strand(ioc));
    acceptor.accept(server);
    connection = std::make_shared<SseConnection>(std::move(server), "conn_1", "s1", limits);
    connection->start("HEAD\r\n\r\n", std::move(first),
                      [this](const std::shared_ptr<SseConnection>&, std::string_view reason) {
                        closed_reason.set_value(std::string(reason));
                      });
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

TEST_F(SseConnectionTest, CloseWritesTheLastFrameThenEndsTheStream) {
  open();
  connection->send(frame("a\n\n"));
  connection->close(frame("retry: 5\n\n"));
  connection->send(frame("after close\n\n"));
  auto got = read_until("never");
  EXPECT_EQ(got, "HEAD\r\n\r\na\n\nretry: 5\n\n");
  EXPECT_EQ(reason(), "closed_by_server");
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

}  // namespace
}  // namespace chat::sse
