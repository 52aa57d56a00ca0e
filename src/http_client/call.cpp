#include "http_client/call.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <limits>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace chat::http_client {
namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr auto kNever = std::chrono::steady_clock::time_point::max();
constexpr int kMaxInterimAnswers = 8;  // a server sends one or two

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    for (int shift : {18, 12, 6, 0}) out.push_back(kAlphabet[(v >> shift) & 63]);
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

std::string host_header(const HttpUrl& url) {
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  if (url.port != (url.tls ? 443 : 80)) host += ":" + std::to_string(url.port);
  return host;
}

// Errors that a pooled connection shows when its server closed it while it
// sat idle: the request was never processed, so sending it again is safe.
bool stale_connection_error(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::ssl::error::stream_truncated;
}

}  // namespace

HttpCall::HttpCall(std::shared_ptr<HttpClient> client, asio::any_io_executor strand)
    : client_(std::move(client)), strand_(std::move(strand)), watchdog_(strand_) {}

HttpCall::~HttpCall() {
  if (connection_) connection_->close();
}

std::string HttpCall::header(std::string_view name) const {
  if (!parser_) return {};
  auto it = parser_->get().find(name);
  return it == parser_->get().end() ? std::string{} : std::string(it->value());
}

asio::awaitable<error_code> HttpCall::start(const HttpRequest& request) {
  auto ec = co_await attempt(request, true);
  bool stale = reused_ && !timed_out_ && !aborted_ &&
               (phase_ == Phase::send || (phase_ == Phase::head && stale_connection_error(ec)));
  if (ec && stale) {
    close_connection();
    connection_.reset();
    ec = co_await attempt(request, false);
  }
  co_return ec;
}

asio::awaitable<error_code> HttpCall::attempt(const HttpRequest& request, bool allow_pooled) {
  const auto& options = client_->options();
  phase_ = Phase::connect;
  reused_ = false;
  if (aborted_) co_return settle(asio::error::operation_aborted);
  if (allow_pooled) connection_ = client_->pool().take(request.url.origin());
  if (connection_) {
    reused_ = true;
    ++client_->stats().connections_reused;
  } else {
    arm(options.connect_timeout);
    if (auto ec = co_await connect(request.url)) co_return ec;
  }

  phase_ = Phase::send;
  http::request<http::string_body> req{http::string_to_verb(request.method), request.url.path, 11};
  req.set(http::field::host, host_header(request.url));
  req.set(http::field::user_agent, options.user_agent);
  for (const auto& [name, value] : request.headers) req.set(name, value);
  req.body() = request.body;
  req.prepare_payload();
  arm(options.read_timeout);
  auto [write_ec, written] = co_await std::visit(
      [&](auto& stream) { return http::async_write(stream, req, kTuple); }, connection_->stream);
  if (write_ec) co_return settle(write_ec);
  ++connection_->requests;

  phase_ = Phase::head;
  // Interim answers (100 Continue, 103 Early Hints) may come first, unasked
  // (RFC 9110 §15.2): the request's answer is the final one after them. Taken
  // for it, the final one would stay on the connection for the next request.
  for (int interim = 0;; ++interim) {
    parser_.emplace();
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // a long reply is not an attack here
    parser_->header_limit(64 * 1024);  // CDN-fronted APIs send many headers
    arm(options.read_timeout);
    auto [head_ec, head_bytes] = co_await std::visit(
        [&](auto& stream) { return http::async_read_header(stream, connection_->buffer, *parser_, kTuple); },
        connection_->stream);
    if (head_ec) co_return settle(head_ec);
    const unsigned status = parser_->get().result_int();
    if (status >= 200) break;
    // 101 switches to a protocol never asked for; endless interims only stall.
    if (status == 101 || interim == kMaxInterimAnswers) co_return http::make_error_code(http::error::bad_status);
  }
  phase_ = parser_->is_done() ? Phase::done : Phase::body;
  if (phase_ == Phase::done) disarm();
  co_return error_code{};
}

asio::awaitable<error_code> HttpCall::connect(const HttpUrl& url) {
  bool via_proxy = client_->proxied(url);
  const HttpUrl& hop = via_proxy ? *client_->options().https_proxy : url;
  auto dns_key = hop.authority();
  tcp::resolver::results_type endpoints;
  if (auto cached = client_->cached_endpoints(dns_key)) {
    endpoints = *cached;
  } else {
    resolver_.emplace(strand_);
    auto [ec, results] = co_await resolver_->async_resolve(hop.host, std::to_string(hop.port), kTuple);
    resolver_.reset();
    if (ec || aborted_ || timed_out_) co_return settle(ec ? ec : asio::error::operation_aborted);
    client_->cache_endpoints(dns_key, results);
    endpoints = std::move(results);
  }

  connection_ = std::make_unique<HttpConnection>(tcp::socket(client_->executor()), url.origin());
  auto& socket = std::get<HttpConnection::Plain>(connection_->stream);
  auto [connect_ec, endpoint] = co_await asio::async_connect(socket, endpoints, kTuple);
  if (connect_ec) co_return settle(connect_ec);
  ++client_->stats().connections_opened;
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);  // requests are one small write; don't wait for an ACK

  if (via_proxy) {
    if (auto ec = co_await tunnel(url)) co_return ec;
  }
  if (!url.tls) co_return error_code{};

  auto plain = std::move(socket);
  auto& tls = connection_->stream.emplace<HttpConnection::Tls>(std::move(plain), client_->tls_context());
  // SNI names the host (never an IP literal, RFC 6066); the verify callback
  // checks the certificate's names against it (or its IP address).
  if (!is_ip_literal(url.host)) SSL_set_tlsext_host_name(tls.native_handle(), url.host.c_str());
  tls.set_verify_mode(asio::ssl::verify_peer);
  tls.set_verify_callback(asio::ssl::host_name_verification(url.host));
  auto [handshake_ec] = co_await tls.async_handshake(asio::ssl::stream_base::client, kTuple);
  if (handshake_ec) co_return settle(handshake_ec);
  co_return error_code{};
}

asio::awaitable<error_code> HttpCall::tunnel(const HttpUrl& url) {
  const auto& proxy = *client_->options().https_proxy;
  auto& socket = std::get<HttpConnection::Plain>(connection_->stream);
  std::string connect = "CONNECT " + url.authority() + " HTTP/1.1\r\nHost: " + url.authority() + "\r\n";
  if (!proxy.userinfo.empty()) connect += "Proxy-Authorization: Basic " + base64(proxy.userinfo) + "\r\n";
  connect += "\r\n";
  auto [write_ec, written] = co_await asio::async_write(socket, asio::buffer(connect), kTuple);
  if (write_ec) co_return settle(write_ec);
  http::response_parser<http::empty_body> reply;
  reply.skip(true);  // a CONNECT reply has no body: the tunnel follows the head
  auto [read_ec, read] = co_await http::async_read_header(socket, connection_->buffer, reply, kTuple);
  if (read_ec) {
    auto ec = settle(read_ec);
    co_return ec.category() == http::make_error_code(http::error::end_of_stream).category() ? HttpClientError::bad_proxy_response : ec;
  }
  if (reply.get().result_int() / 100 != 2) co_return HttpClientError::proxy_refused;
  if (connection_->buffer.size() != 0) co_return HttpClientError::bad_proxy_response;  // spoke before TLS began
  co_return error_code{};
}

asio::awaitable<error_code> HttpCall::read_body(std::string& out, std::optional<std::chrono::milliseconds> timeout) {
  if (phase_ == Phase::done) co_return error_code{};
  if (aborted_ || timed_out_ || !connection_) co_return settle(asio::error::operation_aborted);
  auto& body = parser_->get().body();
  body.data = body_buffer_.data();
  body.size = body_buffer_.size();
  arm(timeout.value_or(client_->options().read_timeout));
  auto [ec, n] = co_await std::visit(
      [&](auto& stream) { return http::async_read_some(stream, connection_->buffer, *parser_, kTuple); },
      connection_->stream);
  out.append(body_buffer_.data(), body_buffer_.size() - body.size);
  if (ec == http::error::need_buffer) ec = {};
  if (ec) co_return settle(ec);
  if (parser_->is_done()) {
    phase_ = Phase::done;
    disarm();
  }
  co_return error_code{};
}

void HttpCall::release() {
  watchdog_.cancel();
  armed_at_ = kNever;
  disarm();
  if (!connection_) return;
  bool reusable = phase_ == Phase::done && !timed_out_ && !aborted_ && parser_ && parser_->keep_alive() &&
                  connection_->buffer.size() == 0;
  if (reusable) client_->pool().put(std::move(connection_));
  else connection_->close();
  connection_.reset();
}

void HttpCall::abort() {
  aborted_ = true;
  watchdog_.cancel();
  armed_at_ = kNever;
  close_connection();
}

error_code HttpCall::settle(error_code ec) const {
  if (timed_out_) return phase_ == Phase::connect ? HttpClientError::connect_timeout : HttpClientError::read_timeout;
  if (aborted_) return HttpClientError::aborted;
  return ec;
}

void HttpCall::arm(std::chrono::milliseconds timeout) {
  deadline_ = std::chrono::steady_clock::now() + timeout;
  if (deadline_ < armed_at_) {
    armed_at_ = deadline_;
    watchdog_.expires_at(armed_at_);
    watch();
  }
}

// One timer per call, re-armed only when it fires: a read pushes the deadline
// forward with a store, not a timer operation, which matters at one read per
// token across hundreds of streams.
void HttpCall::watch() {
  watchdog_.async_wait([weak = weak_from_this()](error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->armed_at_ == kNever) return;
    if (std::chrono::steady_clock::now() >= self->deadline_) {
      self->timed_out_ = true;
      self->armed_at_ = kNever;
      self->close_connection();
      return;
    }
    self->armed_at_ = self->deadline_;
    if (self->armed_at_ == kNever) return;
    self->watchdog_.expires_at(self->armed_at_);
    self->watch();
  });
}

void HttpCall::close_connection() {
  if (resolver_) resolver_->cancel();
  if (connection_) connection_->close();
}

}  // namespace chat::http_client
