#include "harness/delay_proxy.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <deque>
#include <memory>
#include <string>
#include <utility>

namespace chat::test {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// One direction of one relayed connection. Everything runs on the proxy's
// single thread, so the queue needs no lock.
struct Direction {
  Direction(tcp::socket& f, tcp::socket& t) : from(f), to(t), wake(f.get_executor()), hold(f.get_executor()) {}
  tcp::socket& from;
  tcp::socket& to;
  std::deque<std::pair<Clock::time_point, std::string>> queue;  // bytes read, and when they may go on
  asio::steady_timer wake;  // cancelled by the reader when it queues, or when its side closed
  asio::steady_timer hold;
  bool closed = false;
};

struct Link {
  explicit Link(tcp::socket c) : client(std::move(c)), server(client.get_executor()), up(client, server), down(server, client) {}
  tcp::socket client;
  tcp::socket server;
  Direction up;
  Direction down;
};

// The unnamed Link keeps `d` alive for as long as the coroutine runs.
asio::awaitable<void> read_side(std::shared_ptr<Link>, Direction& d, std::chrono::milliseconds delay) {
  std::array<char, 16 * 1024> buffer;
  for (;;) {
    auto [ec, n] = co_await d.from.async_read_some(asio::buffer(buffer), kTuple);
    if (ec) break;
    d.queue.emplace_back(Clock::now() + delay, std::string(buffer.data(), n));
    d.wake.cancel();
  }
  d.closed = true;
  d.wake.cancel();
}

asio::awaitable<void> write_side(std::shared_ptr<Link>, Direction& d) {
  for (;;) {
    if (d.queue.empty()) {
      if (d.closed) break;
      d.wake.expires_at(Clock::time_point::max());
      co_await d.wake.async_wait(kTuple);
      continue;
    }
    if (Clock::now() < d.queue.front().first) {
      d.hold.expires_at(d.queue.front().first);
      co_await d.hold.async_wait(kTuple);
      continue;
    }
    auto bytes = std::move(d.queue.front().second);
    d.queue.pop_front();
    auto [ec, n] = co_await asio::async_write(d.to, asio::buffer(bytes), kTuple);
    if (ec) break;
  }
  boost::system::error_code ignored;
  d.to.shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> relay(tcp::socket client, std::uint16_t target_port, std::chrono::milliseconds delay) {
  auto link = std::make_shared<Link>(std::move(client));
  auto [ec] = co_await link->server.async_connect({asio::ip::address_v4::loopback(), target_port}, kTuple);
  if (ec) co_return;
  auto ex = link->client.get_executor();
  asio::co_spawn(ex, read_side(link, link->up, delay), asio::detached);
  asio::co_spawn(ex, write_side(link, link->up), asio::detached);
  asio::co_spawn(ex, read_side(link, link->down, delay), asio::detached);
  asio::co_spawn(ex, write_side(link, link->down), asio::detached);
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, std::uint16_t target_port, std::chrono::milliseconds delay) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(kTuple);
    if (ec) co_return;  // closed by the destructor
    asio::co_spawn(acceptor.get_executor(), relay(std::move(socket), target_port, delay), asio::detached);
  }
}

}  // namespace

DelayProxy::DelayProxy(std::uint16_t target_port, std::chrono::milliseconds delay)
    : acceptor_(io_, {asio::ip::address_v4::loopback(), 0}),
      port_(acceptor_.local_endpoint().port()),
      thread_([this, target_port, delay] {
        asio::co_spawn(io_, accept_loop(acceptor_, target_port, delay), asio::detached);
        io_.run();
      }) {}

DelayProxy::~DelayProxy() {
  io_.stop();
  thread_.join();
}

}  // namespace chat::test
