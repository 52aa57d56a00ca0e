#pragma once
// A TCP relay on 127.0.0.1 that holds every byte for a fixed time in each
// direction, in order: a server made slow to answer (a Redis far away, a
// congested link) without touching the server. Runs on a thread of its own.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <thread>

namespace chat::test {

class DelayProxy {
 public:
  DelayProxy(std::uint16_t target_port, std::chrono::milliseconds delay);
  ~DelayProxy();
  DelayProxy(const DelayProxy&) = delete;
  DelayProxy& operator=(const DelayProxy&) = delete;

  std::uint16_t port() const { return port_; }

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_;
  std::thread thread_;  // last: starts once the acceptor listens
};

}  // namespace chat::test
