#pragma once
// Accepts TCP connections; each gets a strand (shared, see connection_strands_)
// and an HttpSession.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http/address_connections.hpp"
#include "http/http_session.hpp"

namespace chat::http {

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  // `at_capacity` says whether one more connection would pass the limit; such a
  // connection gets a 503 and is closed (after a probe, see let_probes_through).
  Listener(boost::asio::io_context& ioc, boost::asio::ip::tcp::endpoint endpoint, RequestHandler& handler,
           SessionLimits limits, std::function<bool()> at_capacity);

  // Caps connections per client address (before run()); a connection over
  // the cap gets a 429 and is closed (after a probe, see let_probes_through),
  // counted in `refused`.
  void limit_per_address(std::shared_ptr<AddressConnections> gate, metrics::Counter* refused) {
    per_address_ = std::move(gate);
    refused_per_address_ = refused;
  }
  // Paths (before run()) still answered on a connection over either cap, one
  // request each, so that a full pod does not look dead to its orchestrator.
  void let_probes_through(std::vector<std::string> paths) {
    probe_paths_ = std::make_shared<const std::vector<std::string>>(std::move(paths));
  }

  void run();
  void stop();  // closes the acceptor; open connections are not touched
  void collect(metrics::Exposition& out) const;
  std::uint16_t port() const { return port_; }

 private:
  void accept();
  void on_accept(boost::system::error_code ec, boost::asio::ip::tcp::socket socket);
  void refuse(const std::shared_ptr<HttpSession>& session, Refusal refusal);
  std::shared_ptr<void> probe_place(const boost::asio::ip::address& peer);

  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
  Strand next_connection_strand();

  boost::asio::io_context& ioc_;
  Strand strand_;
  // A strand is what keeps a connection's handlers from running at once; one
  // of its own would cost every idle connection about 100 bytes. Connections
  // take turns over a fixed set instead: one shared with a few hundredth of
  // the others serializes handlers that are all short and never block.
  std::vector<Strand> connection_strands_;
  std::size_t next_strand_ = 0;  // strand-only, like the acceptor
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer backoff_;
  RequestHandler& handler_;
  SessionLimits limits_;
  std::function<bool()> at_capacity_;
  std::shared_ptr<AddressConnections> per_address_;
  metrics::Counter* refused_per_address_ = nullptr;
  metrics::Counter refused_at_capacity_;
  std::shared_ptr<const std::vector<std::string>> probe_paths_;
  // Connections over a cap still read for a probe: a few at a time, and two per
  // address, so that one client's idle sockets cannot take the places of the
  // orchestrator's probes. Released from any strand.
  std::shared_ptr<std::atomic<std::size_t>> probe_places_taken_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::shared_ptr<AddressConnections> probe_places_per_address_;
  std::uint16_t port_ = 0;
};

}  // namespace chat::http
