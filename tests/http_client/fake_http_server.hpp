#pragma once
// Real HTTP(S) servers on 127.0.0.1 for the HTTP client and provider tests:
// each connection reads requests and plays a script of raw writes, pauses and
// closes, so a test controls every byte and every TCP write boundary of a
// provider's stream (split UTF-8, CRLF, chunk sizes, mid-stream disconnects).
// Runs on its own io_context thread(s).

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/json/value.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace chat::http_client::test {

struct ReceivedRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  boost::json::value json() const;  // the body parsed; null if not JSON
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

struct Step {
  enum class Kind { write, sleep, close, hang } kind;
  std::string bytes;
  std::chrono::milliseconds delay{0};
};
using Script = std::vector<Step>;

inline Step write(std::string bytes) { return {Step::Kind::write, std::move(bytes), {}}; }
inline Step sleep(std::chrono::milliseconds d) { return {Step::Kind::sleep, {}, d}; }
inline Step close() { return {Step::Kind::close, {}, {}}; }
// Sends nothing more and waits until the client closes the connection.
inline Step hang() { return {Step::Kind::hang, {}, {}}; }

// Pieces of raw HTTP/1.1 responses.
std::string sse_head(const std::string& extra_headers = "");  // 200, text/event-stream, chunked
std::string chunk(std::string_view data);                      // one chunk of a chunked body
std::string last_chunk();                                      // "0\r\n\r\n"
std::string response(unsigned status, const std::string& content_type, const std::string& body,
                     const std::string& extra_headers = "");  // with Content-Length

// A script streaming `events` (each a complete SSE event text) as one chunk
// each, with `gap` between them, then the terminating chunk.
Script sse_script(const std::vector<std::string>& events, std::chrono::milliseconds gap = {});

class FakeServer {
 public:
  // The handler picks the script for each request; `index` counts requests
  // across all connections from 0.
  using Handler = std::function<Script(const ReceivedRequest& request, std::size_t index)>;

  explicit FakeServer(Handler handler, std::shared_ptr<boost::asio::ssl::context> tls = nullptr, unsigned threads = 1);
  ~FakeServer();

  std::uint16_t port() const { return port_; }
  // http://127.0.0.1:port (or https://localhost:port for a TLS server)
  std::string base_url() const;

  std::vector<ReceivedRequest> requests() const;
  bool wait_requests(std::size_t n, std::chrono::milliseconds timeout);
  std::size_t connections() const { return connections_; }
  // Connections that ended because the client closed them.
  std::size_t client_closes() const { return client_closes_; }
  bool wait_client_closes(std::size_t n, std::chrono::milliseconds timeout);
  // Connections this server closed by a close() step.
  bool wait_server_closes(std::size_t n, std::chrono::milliseconds timeout);
  // The SNI host name of the last TLS handshake ("" if none was sent).
  std::string last_sni() const;
  void note_sni(std::string name);

 // Used by the connection coroutines.
  Script on_request(ReceivedRequest r);
  void note_client_close();
  void note_server_close();
  boost::asio::io_context& io() { return ioc_; }

 private:
  void accept_loop();

  Handler handler_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::vector<std::thread> threads_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<ReceivedRequest> requests_;
  std::string last_sni_;
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> client_closes_{0};
  std::atomic<std::size_t> server_closes_{0};
  std::atomic<bool> stopping_{false};
};

// An HTTP CONNECT proxy: opens tunnels to 127.0.0.1 (whatever host is named)
// and relays bytes. Records each CONNECT target and Proxy-Authorization.
class FakeConnectProxy {
 public:
  explicit FakeConnectProxy(unsigned refuse_status = 0);  // non-zero: answer every CONNECT with it
  ~FakeConnectProxy();
  std::uint16_t port() const { return port_; }
  std::vector<std::pair<std::string, std::string>> connects() const;  // target, proxy-authorization

 private:
  unsigned refuse_status_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, std::string>> connects_;
};

}  // namespace chat::http_client::test
