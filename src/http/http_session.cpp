#include "http/http_session.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>

#include "http/framing.hpp"
#include "log/log.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;

namespace chat::http {
namespace {

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

// What one read may add to the buffer beyond a whole header: Beast reads up to
// 64 KiB at a time and moves body bytes out as it parses them.
constexpr std::size_t kReadRoom = 64 * 1024;

// The first read of a request: what Beast's own first read takes, so a
// connection holds no more than before (the per-stream memory budget).
constexpr std::size_t kFirstRead = 512;

// A probe sends its request at once; a connection over a cap that does not
// holds its place no longer than this.
constexpr std::chrono::seconds kProbeReadTimeout{2};

}  // namespace

HttpSession::HttpSession(Socket socket, RequestHandler& handler, SessionLimits limits)
    : stream_(std::move(socket)), buffer_(limits.max_header_bytes + kReadRoom), handler_(handler), limits_(limits) {
  open_sessions_.fetch_add(1, std::memory_order_relaxed);
  boost::system::error_code ec;
  auto remote = stream_.socket().remote_endpoint(ec);
  if (!ec) peer_ = remote.address();
}

HttpSession::~HttpSession() { open_sessions_.fetch_sub(1, std::memory_order_relaxed); }

void HttpSession::run() {
  asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_header(); });
}

void HttpSession::reject(Response response) {
  asio::dispatch(stream_.get_executor(), [self = shared_from_this(), r = std::move(response)]() mutable {
    self->handler_.decorate(r);
    self->write(std::move(r), true);
  });
}

void Refusal::record(const boost::asio::ip::address& peer) const {
  if (counter != nullptr) counter->add();
  log::warn("connection_refused", {{"reason", reason}, {"peer", peer.to_string()}});
}

void HttpSession::serve_probes_only(Refusal refusal, std::shared_ptr<const std::vector<std::string>> probes) {
  refusal_ = std::make_unique<Refusal>(std::move(refusal));
  limits_.read_timeout = std::min<std::chrono::milliseconds>(limits_.read_timeout, kProbeReadTimeout);
  probes_ = std::move(probes);
  run();
}

// A request has SERVER_READ_TIMEOUT from its first byte: the time a
// keep-alive connection waited for that byte (as long at most) is not its own.
void HttpSession::read_header() {
  stream_.expires_after(limits_.read_timeout);
  if (buffer_.size() > 0) return read_started_header();  // pipelined: it has begun
  stream_.async_read_some(buffer_.prepare(kFirstRead), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
    self->buffer_.commit(n);
    if (ec) return self->close();  // gone, or idle for too long: nothing to answer
    self->stream_.expires_after(self->limits_.read_timeout);
    self->read_started_header();
  });
}

void HttpSession::read_started_header() {
  parser_.emplace();
  parser_->body_limit(limits_.max_body_bytes);
  parser_->header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
  beast_http::async_read_header(stream_, buffer_, *parser_,
                                [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

void HttpSession::on_header(boost::system::error_code ec) {
  if (ec) return on_read_error(ec);
  started_ = std::chrono::steady_clock::now();
  auto& req = parser_->get();
  // Before any body byte is read: a body framed otherwise than we would read
  // it must not be taken for the next request.
  if (auto bad = check_framing(req.base(), parser_->chunked())) {
    log::warn("http_framing_refused", {{"reason", bad->message}});
    return refuse(error_response(bad->status, bad->code, bad->message), !parser_->is_done());
  }
  if (auto bad = check_host(req.base())) {
    log::warn("http_host_refused", {{"reason", bad->message}});
    return refuse(error_response(bad->status, bad->code, bad->message), !parser_->is_done());
  }
  if (refusal_ && std::ranges::find(*probes_, path_of(req.target())) == probes_->end()) {
    refusal_->record(peer_);
    // Shedding load: its place goes once the answer is out, or, with a body
    // still coming, after the linger that keeps it from ending in a reset.
    return refuse(std::move(refusal_->response), !parser_->is_done());
  }
  // curl and others wait for this before sending a body over 1 KiB.
  if (beast::iequals(req[beast_http::field::expect], "100-continue") && !parser_->is_done()) {
    static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    return asio::async_write(stream_, asio::buffer(kContinue), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      self->read_body();
    });
  }
  read_body();
}

void HttpSession::read_body() {
  beast_http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
}

void HttpSession::on_body(boost::system::error_code ec) {
  if (ec) return on_read_error(ec);
  stream_.expires_never();
  auto request = parser_->release();
  parser_.reset();
  keep_alive_ = request.keep_alive() && !refusal_;  // a probe over a cap gets one answer
  method_ = request.method();
  target_ = std::string(path_of(request.target()));
  handler_.handle(std::move(request), shared_from_this());
}

void HttpSession::on_read_error(boost::system::error_code ec) {
  if (ec == beast_http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::connection_reset ||
      ec == asio::error::eof || ec == asio::error::operation_aborted)
    return close();
  // A body announced and not yet read may still be arriving.
  const bool body_pending =
      ec == beast_http::error::body_limit || (parser_ && parser_->is_header_done() && !parser_->is_done());
  refuse(ec == beast_http::error::body_limit
                     ? error_response(Status::payload_too_large,
                                      "payload_too_large", "the request body is larger than " +
                                                               std::to_string(limits_.max_body_bytes) + " bytes")
                 : ec == beast_http::error::buffer_overflow
                     ? error_response(Status::bad_request, "bad_request", "a chunk header line is too long")
                 : ec == beast_http::error::header_limit
                     ? error_response(Status::request_header_fields_too_large, "headers_too_large",
                                      "the request headers are too large")
                     : error_response(Status::bad_request, "bad_request", "malformed HTTP request: " + ec.message()),
         body_pending);
}

void HttpSession::refuse(Response res, bool body_pending) {
  keep_alive_ = false;
  linger_ = body_pending;
  method_ = parser_ ? parser_->get().method() : beast_http::verb::unknown;
  target_ = parser_ ? std::string(path_of(parser_->get().target())) : std::string();
  if (started_ == std::chrono::steady_clock::time_point{}) started_ = std::chrono::steady_clock::now();
  handler_.decorate(res);
  write(std::move(res), true);
}

void HttpSession::respond(Response response) {
  asio::dispatch(stream_.get_executor(), [self = shared_from_this(), r = std::move(response)]() mutable {
    // A handler may end the connection (Connection: close) after a request it
    // found malformed.
    bool close = !self->keep_alive_ || !r.keep_alive();
    self->write(std::move(r), close);
  });
}

void HttpSession::write(Response response, bool close_after) {
  response.keep_alive(!close_after);
  response.prepare_payload();
  if (method_ == beast_http::verb::head && !response.body().empty()) {
    // The headers of the GET answer, Content-Length included, and no body.
    auto length = response.body().size();
    response.body().clear();
    response.content_length(length);
  }
  auto status = response.result_int();
  if (log::enabled(log::Level::info)) {
    auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started_);
    auto corr = response["X-Correlation-ID"];
    auto method = beast_http::to_string(method_);
    log::info("http_request", {{"method", std::string_view(method.data(), method.size())}, {"path", target_}, {"status", static_cast<std::int64_t>(status)},
                               {"duration_ms", static_cast<double>(elapsed.count()) / 1000.0},
                               {"correlation_id", std::string_view(corr.data(), corr.size())}});
  }
  response_ = std::make_shared<Response>(std::move(response));
  stream_.expires_after(limits_.write_timeout);
  beast_http::async_write(stream_, *response_, [self = shared_from_this(), close_after](beast::error_code ec, std::size_t) {
    self->on_write(ec, close_after);
  });
}

void HttpSession::on_write(boost::system::error_code ec, bool close_after) {
  response_.reset();
  if (!ec && close_after && linger_) return linger();
  if (ec || close_after) return close();
  started_ = {};
  read_header();
}

void HttpSession::upgrade(std::function<void(Socket, std::shared_ptr<void>)> take) {
  asio::dispatch(stream_.get_executor(), [self = shared_from_this(), take = std::move(take)] {
    self->stream_.expires_never();
    // Whatever the client pipelined after its request is not ours to keep.
    take(self->stream_.release_socket(), std::move(self->ticket_));
  });
}

void HttpSession::close() {
  beast::error_code ignored;
  stream_.socket().shutdown(Socket::shutdown_send, ignored);
  stream_.close();
}

// A socket closed with bytes unread sends a reset, and a client (or a proxy)
// still sending the refused request's body then fails its send and may never
// read the answer: nginx answers such a request 502, not our 413. So, as
// nginx's own lingering close does, the answer is followed by a half-close,
// and what still arrives is read and dropped until the client closes, for at
// most 2 s and 4 MiB.
void HttpSession::linger() {
  beast::error_code ignored;
  stream_.socket().shutdown(Socket::shutdown_send, ignored);
  stream_.expires_after(std::chrono::seconds{2});
  drain(0);
}

void HttpSession::drain(std::size_t drained) {
  constexpr std::size_t kLingerBytes = 4 * 1024 * 1024;
  if (drained > kLingerBytes) return stream_.close();
  buffer_.clear();
  stream_.async_read_some(buffer_.prepare(std::min<std::size_t>(16 * 1024, buffer_.max_size())),
                          [self = shared_from_this(), drained](beast::error_code ec, std::size_t n) {
                            if (ec) return self->stream_.close();  // the client closed, or the time is up
                            self->drain(drained + n);
                          });
}

}  // namespace chat::http
