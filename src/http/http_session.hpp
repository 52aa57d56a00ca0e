#pragma once
// One HTTP/1.1 connection: reads a request (bounded in size and time), hands it
// to the RequestHandler, writes the response, and repeats while keep-alive holds.
// A handler may instead take the socket over (SSE); the session then ends
// without closing it.
//
// Threads: everything runs on the connection's strand. respond() and upgrade()
// may be called from any thread (store callbacks); they post onto the strand.

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http/responses.hpp"
#include "metrics/metrics.hpp"

namespace chat::http {

struct SessionLimits {
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_header_bytes = 16 * 1024;
  std::chrono::milliseconds read_timeout{30'000};
  std::chrono::milliseconds write_timeout{30'000};
};

class HttpSession;

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Must eventually call session->respond() or session->upgrade() exactly once.
  virtual void handle(Request request, std::shared_ptr<HttpSession> session) = 0;
  // The answer to a request that could not be read (413, 400, 503 at capacity):
  // lets the handler add its headers (CORS) to it.
  virtual void decorate(Response& response) = 0;
};

// The answer to a connection over a cap, and where it is counted once sent.
struct Refusal {
  Response response;
  std::string_view reason;  // a literal, for the log
  metrics::Counter* counter = nullptr;
  // Logs and counts it, for `peer`.
  void record(const boost::asio::ip::address& peer) const;
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  using Socket = boost::asio::ip::tcp::socket;

  HttpSession(Socket socket, RequestHandler& handler, SessionLimits limits);
  ~HttpSession();

  void run();
  // Sends `response` and closes (used when the server is at capacity).
  void reject(Response response);
  // Over a connection cap: reads one request; one for a path in `probes` is
  // handled as usual, any other gets `refusal`; then the connection closes.
  void serve_probes_only(Refusal refusal, std::shared_ptr<const std::vector<std::string>> probes);
  void respond(Response response);
  // Hands the socket to `take` on the strand; no timeout applies to it any more.
  // The per-address ticket goes with it: a stream is still that address's
  // connection.
  void upgrade(std::function<void(Socket, std::shared_ptr<void> ticket)> take);

  // The TCP peer (unspecified if the socket had already failed).
  const boost::asio::ip::address& peer() const { return peer_; }
  // Keeps `ticket` (a per-address connection count) for the session's life.
  void hold(std::shared_ptr<void> ticket) { ticket_ = std::move(ticket); }

  // Open HTTP sessions in this process (SSE streams are counted by the hub).
  static std::size_t open_sessions() { return open_sessions_.load(std::memory_order_relaxed); }

 private:
  void read_header();
  void read_started_header();
  void on_header(boost::system::error_code ec);
  void read_body();
  void on_body(boost::system::error_code ec);
  void on_read_error(boost::system::error_code ec);
  // Answers a request that cannot be read (framing, limits) and closes;
  // lingering first when its body may still be arriving (see linger()).
  void refuse(Response response, bool body_pending);
  void write(Response response, bool close_after);
  void on_write(boost::system::error_code ec, bool close);
  void close();
  void linger();
  void drain(std::size_t drained);

  boost::beast::tcp_stream stream_;
  // Bounded: Beast's parser limits the header and the body, but not a chunk
  // header line (chunk-size and extensions), which it keeps in this buffer
  // until its CRLF; "5;" and gigabytes without one must not be buffered.
  boost::beast::flat_buffer buffer_;
  std::optional<beast_http::request_parser<beast_http::string_body>> parser_;
  std::shared_ptr<Response> response_;  // kept alive while it is written
  RequestHandler& handler_;
  SessionLimits limits_;
  bool keep_alive_ = false;
  bool linger_ = false;  // a refused request's body may still be arriving: see linger()
  beast_http::verb method_{};
  std::string target_;
  std::chrono::steady_clock::time_point started_{};
  boost::asio::ip::address peer_;
  std::shared_ptr<void> ticket_;
  // Set by serve_probes_only().
  std::unique_ptr<Refusal> refusal_;
  std::shared_ptr<const std::vector<std::string>> probes_;

  static inline std::atomic<std::size_t> open_sessions_{0};
};

}  // namespace chat::http
