#include "http/listener.hpp"

#include <boost/asio/strand.hpp>

#include "log/log.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;

namespace chat::http {
namespace {

constexpr std::size_t kConnectionStrands = 256;
constexpr std::size_t kProbePlaces = 16;
constexpr std::size_t kProbePlacesPerAddress = 2;

}  // namespace

Listener::Listener(asio::io_context& ioc, tcp::endpoint endpoint, RequestHandler& handler, SessionLimits limits,
                   std::function<bool()> at_capacity)
    : ioc_(ioc),
      strand_(asio::make_strand(ioc)),
      acceptor_(strand_),
      backoff_(strand_),
      handler_(handler),
      limits_(limits),
      at_capacity_(std::move(at_capacity)),
      probe_places_per_address_(std::make_shared<AddressConnections>(kProbePlacesPerAddress, nullptr)) {
  // Start-up failures (port in use, bad address) throw: the process must not run
  // without its listener.
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(asio::socket_base::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  port_ = acceptor_.local_endpoint().port();
  connection_strands_.reserve(kConnectionStrands);
  for (std::size_t i = 0; i < kConnectionStrands; ++i) connection_strands_.push_back(asio::make_strand(ioc_));
}

Listener::Strand Listener::next_connection_strand() {
  return connection_strands_[next_strand_++ % connection_strands_.size()];
}

void Listener::run() {
  asio::dispatch(strand_, [self = shared_from_this()] { self->accept(); });
}

void Listener::stop() {
  asio::dispatch(strand_, [self = shared_from_this()] {
    boost::system::error_code ignored;
    self->acceptor_.close(ignored);
    self->backoff_.cancel();
  });
}

void Listener::accept() {
  if (!acceptor_.is_open()) return;
  acceptor_.async_accept(next_connection_strand(), [self = shared_from_this()](boost::system::error_code ec, tcp::socket s) {
    self->on_accept(ec, std::move(s));
  });
}

void Listener::on_accept(boost::system::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
  if (ec) {
    // Out of file descriptors and the like: pause instead of spinning.
    log::warn("accept_failed", {{"error", ec.message()}});
    backoff_.expires_after(std::chrono::milliseconds{100});
    backoff_.async_wait([self = shared_from_this()](boost::system::error_code e) {
      if (!e) self->accept();
    });
    return;
  }
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  // Asked before the session exists: it counts itself as open.
  const bool full = at_capacity_ && at_capacity_();
  auto session = std::make_shared<HttpSession>(std::move(socket), handler_, limits_);
  if (full) {
    auto res = error_response(Status::service_unavailable, "at_capacity", "the server has too many open connections");
    res.set(beast_http::field::retry_after, "5");
    refuse(session, {std::move(res), "at_capacity", &refused_at_capacity_});
  } else if (auto ticket = per_address_ ? per_address_->admit(session->peer()) : nullptr; per_address_ && !ticket) {
    auto res = error_response(Status::too_many_requests, "rate_limited",
                              "too many open connections from this address");
    res.set(beast_http::field::retry_after, "5");
    refuse(session, {std::move(res), "per_address_limit", refused_per_address_});
  } else {
    session->hold(std::move(ticket));
    session->run();
  }
  accept();
}

void Listener::refuse(const std::shared_ptr<HttpSession>& session, Refusal refusal) {
  if (probe_paths_) {
    if (auto place = probe_place(session->peer())) {
      session->hold(std::move(place));
      return session->serve_probes_only(std::move(refusal), probe_paths_);
    }
  }
  refusal.record(session->peer());
  session->reject(std::move(refusal.response));
}

void Listener::collect(metrics::Exposition& out) const {
  out.counter("chat_connections_refused_total",
              "Connections answered 503 at_capacity: SERVER_MAX_CONNECTIONS were open (probes answered are not counted).",
              static_cast<double>(refused_at_capacity_.value()));
}

std::shared_ptr<void> Listener::probe_place(const asio::ip::address& peer) {
  auto of_address = probe_places_per_address_->admit(peer);
  if (!of_address) return nullptr;
  if (probe_places_taken_->fetch_add(1) >= kProbePlaces) {
    probe_places_taken_->fetch_sub(1);
    return nullptr;
  }
  return {probe_places_taken_.get(), [taken = probe_places_taken_, of_address](void*) { taken->fetch_sub(1); }};
}

}  // namespace chat::http
