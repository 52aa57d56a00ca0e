#pragma once
// One HTTP exchange with a streamed response body, driven by a coroutine on
// the caller's strand: start() connects (or takes a pooled connection), sends
// the request and reads the head; read_body() hands out body bytes as they
// arrive; release() gives a cleanly finished connection back to the pool.
// All members are strand-only. Timeouts and abort() close the socket, which
// ends whatever operation is pending.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "http_client/client.hpp"

namespace chat::http_client {

class HttpCall : public std::enable_shared_from_this<HttpCall> {
 public:
  enum class Phase { connect, send, head, body, done };

  // `strand` is the executor the calling coroutine runs on.
  HttpCall(std::shared_ptr<HttpClient> client, boost::asio::any_io_executor strand);
  ~HttpCall();

  boost::asio::awaitable<boost::system::error_code> start(const HttpRequest& request);
  unsigned status() const { return parser_ ? parser_->get().result_int() : 0; }
  std::string header(std::string_view name) const;

  // Appends the next body bytes to `out` (possibly none); done() once the
  // body is complete. `timeout`: the client's read timeout unless given.
  boost::asio::awaitable<boost::system::error_code> read_body(
      std::string& out, std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  bool done() const { return phase_ == Phase::done; }

  // Pools the connection when the body was read to its end and the server
  // keeps it alive; closes it otherwise.
  void release();
  void abort();

  Phase phase() const { return phase_; }
  bool reused_connection() const { return reused_; }

 private:
  boost::asio::awaitable<boost::system::error_code> attempt(const HttpRequest& request, bool allow_pooled);
  boost::asio::awaitable<boost::system::error_code> connect(const HttpUrl& url);
  boost::asio::awaitable<boost::system::error_code> tunnel(const HttpUrl& url);
  boost::system::error_code settle(boost::system::error_code ec) const;
  void arm(std::chrono::milliseconds timeout);
  void disarm() { deadline_ = std::chrono::steady_clock::time_point::max(); }
  void watch();
  void close_connection();

  std::shared_ptr<HttpClient> client_;
  boost::asio::any_io_executor strand_;
  boost::asio::steady_timer watchdog_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point armed_at_ = std::chrono::steady_clock::time_point::max();
  std::optional<boost::asio::ip::tcp::resolver> resolver_;
  std::unique_ptr<HttpConnection> connection_;
  std::optional<boost::beast::http::response_parser<boost::beast::http::buffer_body>> parser_;
  std::array<char, 16 * 1024> body_buffer_{};
  Phase phase_ = Phase::connect;
  bool timed_out_ = false;
  bool aborted_ = false;
  bool reused_ = false;
};

}  // namespace chat::http_client
