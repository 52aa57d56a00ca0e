#include "http_client/fake_http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/parse.hpp>

#include <array>
#include <cctype>
#include <cstdio>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace chat::http_client::test {
namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void close_lowest(tcp::socket& s) {
  boost::system::error_code ignored;
  s.shutdown(tcp::socket::shutdown_both, ignored);
  s.close(ignored);
}
template <class S>
void close_lowest(asio::ssl::stream<S>& s) {
  close_lowest(s.next_layer());
}

template <class Stream>
asio::awaitable<void> serve(FakeServer& server, Stream& stream) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request<http::string_body> req;
    auto [ec, n] = co_await http::async_read(stream, buffer, req, kTuple);
    if (ec) {
      server.note_client_close();  // EOF (or reset) while waiting for a request
      co_return;
    }
    ReceivedRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (const auto& f : req) r.headers[lower(std::string(f.name_string()))] = std::string(f.value());
    r.body = req.body();
    auto script = server.on_request(std::move(r));
    for (const auto& step : script) {
      switch (step.kind) {
        case Step::Kind::write: {
          auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(step.bytes), kTuple);
          if (wec) {
            server.note_client_close();
            co_return;
          }
          break;
        }
        case Step::Kind::sleep: {
          asio::steady_timer timer(co_await asio::this_coro::executor, step.delay);
          co_await timer.async_wait(kTuple);
          break;
        }
        case Step::Kind::close:
          close_lowest(stream);
          server.note_server_close();
          co_return;
        case Step::Kind::hang: {
          char byte;
          for (;;) {
            auto [rec, rn] = co_await stream.async_read_some(asio::buffer(&byte, 1), kTuple);
            if (rec) break;
          }
          server.note_client_close();
          co_return;
        }
      }
    }
  }
}

}  // namespace

boost::json::value ReceivedRequest::json() const {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  return ec ? boost::json::value{} : v;
}

std::string sse_head(const std::string& extra_headers) {
  return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
         "Transfer-Encoding: chunked\r\n" +
         extra_headers + "\r\n";
}

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

std::string last_chunk() { return "0\r\n\r\n"; }

std::string response(unsigned status, const std::string& content_type, const std::string& body,
                     const std::string& extra_headers) {
  return "HTTP/1.1 " + std::to_string(status) + " Status\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body;
}

Script sse_script(const std::vector<std::string>& events, std::chrono::milliseconds gap) {
  Script s{write(sse_head())};
  for (const auto& e : events) {
    if (gap.count() > 0) s.push_back(sleep(gap));
    s.push_back(write(chunk(e)));
  }
  s.push_back(write(last_chunk()));
  return s;
}

FakeServer::FakeServer(Handler handler, std::shared_ptr<asio::ssl::context> tls, unsigned threads)
    : handler_(std::move(handler)), tls_(std::move(tls)), acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
  port_ = acceptor_.local_endpoint().port();
  accept_loop();
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
}

FakeServer::~FakeServer() {
  stopping_ = true;
  ioc_.stop();
  for (auto& t : threads_) t.join();
}

void FakeServer::accept_loop() {
  asio::co_spawn(
      ioc_,
      [this]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, socket] = co_await acceptor_.async_accept(kTuple);
          if (ec) co_return;
          ++connections_;
          socket.set_option(tcp::no_delay(true));  // each scripted write leaves as its own segment
          asio::co_spawn(
              asio::make_strand(ioc_),
              [this, s = std::move(socket)]() mutable -> asio::awaitable<void> {
                if (!tls_) {
                  co_await serve(*this, s);
                  co_return;
                }
                asio::ssl::stream<tcp::socket> stream(std::move(s), *tls_);
                auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::server, kTuple);
                if (hec) {
                  note_client_close();
                  co_return;
                }
                const char* sni = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
                note_sni(sni ? sni : "");
                co_await serve(*this, stream);
              },
              asio::detached);
        }
      },
      asio::detached);
}

std::string FakeServer::base_url() const {
  return (tls_ ? "https://localhost:" : "http://127.0.0.1:") + std::to_string(port_);
}

Script FakeServer::on_request(ReceivedRequest r) {
  std::size_t index;
  {
    std::lock_guard lock(mutex_);
    index = requests_.size();
    requests_.push_back(r);
  }
  cv_.notify_all();
  return handler_(r, index);
}

void FakeServer::note_client_close() {
  if (stopping_) return;
  {
    std::lock_guard lock(mutex_);
    ++client_closes_;
  }
  cv_.notify_all();
}

std::string FakeServer::last_sni() const {
  std::lock_guard lock(mutex_);
  return last_sni_;
}

void FakeServer::note_sni(std::string name) {
  std::lock_guard lock(mutex_);
  last_sni_ = std::move(name);
}

std::vector<ReceivedRequest> FakeServer::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

bool FakeServer::wait_requests(std::size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

bool FakeServer::wait_client_closes(std::size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return client_closes_ >= n; });
}

void FakeServer::note_server_close() {
  {
    std::lock_guard lock(mutex_);
    ++server_closes_;
  }
  cv_.notify_all();
}

bool FakeServer::wait_server_closes(std::size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return server_closes_ >= n; });
}

// ---- CONNECT proxy ----

namespace {

asio::awaitable<void> relay(tcp::socket& from, tcp::socket& to) {
  std::array<char, 16384> buf;
  for (;;) {
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buf), kTuple);
    if (ec) break;
    auto [wec, wn] = co_await asio::async_write(to, asio::buffer(buf.data(), n), kTuple);
    if (wec) break;
  }
  close_lowest(from);
  close_lowest(to);
}

}  // namespace

FakeConnectProxy::FakeConnectProxy(unsigned refuse_status)
    : refuse_status_(refuse_status), acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
  port_ = acceptor_.local_endpoint().port();
  asio::co_spawn(
      ioc_,
      [this]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, socket] = co_await acceptor_.async_accept(kTuple);
          if (ec) co_return;
          asio::co_spawn(
              ioc_,
              [this, client = std::move(socket)]() mutable -> asio::awaitable<void> {
                beast::flat_buffer buffer;
                http::request_parser<http::empty_body> parser;
                auto [ec, n] = co_await http::async_read_header(client, buffer, parser, kTuple);
                if (ec) co_return;
                auto& req = parser.get();
                std::string target(req.target());
                {
                  std::lock_guard lock(mutex_);
                  connects_.emplace_back(target, std::string(req[http::field::proxy_authorization]));
                }
                if (refuse_status_ != 0 || req.method() != http::verb::connect) {
                  std::string reply = "HTTP/1.1 " + std::to_string(refuse_status_ ? refuse_status_ : 405) +
                                      " No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                  co_await asio::async_write(client, asio::buffer(reply), kTuple);
                  close_lowest(client);
                  co_return;
                }
                auto port = target.substr(target.rfind(':') + 1);
                tcp::socket upstream(ioc_);
                tcp::resolver resolver(ioc_);
                auto [rec, results] = co_await resolver.async_resolve("127.0.0.1", port, kTuple);
                if (rec) co_return;
                auto [cec, ep] = co_await asio::async_connect(upstream, results, kTuple);
                if (cec) co_return;
                std::string ok = "HTTP/1.1 200 Connection established\r\n\r\n";
                co_await asio::async_write(client, asio::buffer(ok), kTuple);
                auto ex = co_await asio::this_coro::executor;
                auto up = std::make_shared<tcp::socket>(std::move(upstream));
                auto down = std::make_shared<tcp::socket>(std::move(client));
                asio::co_spawn(ex, [up, down]() -> asio::awaitable<void> { co_await relay(*up, *down); }, asio::detached);
                co_await relay(*down, *up);
              },
              asio::detached);
        }
      },
      asio::detached);
  thread_ = std::thread([this] { ioc_.run(); });
}

FakeConnectProxy::~FakeConnectProxy() {
  ioc_.stop();
  thread_.join();
}

std::vector<std::pair<std::string, std::string>> FakeConnectProxy::connects() const {
  std::lock_guard lock(mutex_);
  return connects_;
}

}  // namespace chat::http_client::test
