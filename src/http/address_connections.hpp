#pragma once
// Open connections per client address (SERVER_MAX_CONNECTIONS_PER_IP; an IPv6
// client by its /64), so that
// one client cannot take every connection the pod has. A connection holds a
// ticket for as long as its HttpSession lives; addresses the predicate exempts
// (trusted proxies, which carry many clients) are not counted.

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v6.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace chat::http {

class AddressConnections : public std::enable_shared_from_this<AddressConnections> {
 public:
  using Exempt = std::function<bool(const boost::asio::ip::address&)>;
  AddressConnections(std::size_t max_per_address, Exempt exempt)
      : max_(max_per_address), exempt_(std::move(exempt)) {}

  // A ticket to keep while the connection is open; null when the address has
  // `max_per_address` open already.
  std::shared_ptr<void> admit(const boost::asio::ip::address& peer);
  std::size_t open(const boost::asio::ip::address& peer) const;

 private:
  void release(const std::string& key);

  std::size_t max_;
  Exempt exempt_;
  mutable std::mutex mutex_;  // guards open_: accepted on the listener's strand, released on any connection's
  std::unordered_map<std::string, std::size_t> open_;
};

}  // namespace chat::http
