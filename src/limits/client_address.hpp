#pragma once
// Who a request comes from, for the per-address limits: the TCP peer, unless
// the peer is a proxy named in SERVER_TRUSTED_PROXIES, in which case the
// nearest X-Forwarded-For entry that is not a trusted proxy. Entries a client
// wrote itself sit left of the ones trusted proxies appended, so they are never
// believed.

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace chat::limits {

class TrustedProxies {
 public:
  // "10.0.0.0/8, 127.0.0.1, ::1": addresses and networks, comma or space
  // separated. nullopt (and `error` says which entry) when one does not parse.
  static std::optional<TrustedProxies> parse(std::string_view list, std::string& error);

  bool empty() const { return networks_.empty(); }
  bool contains(const boost::asio::ip::address& address) const;

  // What the limits count against (text, as a key): the client's address, its
  // /64 network for IPv6 (limit_key).
  std::string client_of(const boost::asio::ip::address& peer, std::string_view forwarded_for) const;

 private:
  std::vector<std::variant<boost::asio::ip::network_v4, boost::asio::ip::network_v6>> networks_;
};

// An IPv4 address that arrived as IPv4-mapped IPv6 (::ffff:a.b.c.d) as IPv4.
boost::asio::ip::address unmapped(const boost::asio::ip::address& address);

// An IPv4 address as it is; an IPv6 one as its /64 network ("2001:db8:1:2::/64").
std::string limit_key(const boost::asio::ip::address& address);

}  // namespace chat::limits
