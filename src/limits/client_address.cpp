#include "limits/client_address.hpp"

#include <algorithm>

namespace chat::limits {

namespace ip = boost::asio::ip;

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<ip::address> parse_address(std::string_view text) {
  boost::system::error_code ec;
  auto a = ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  return unmapped(a);
}

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// An X-Forwarded-For entry: an address, or one with the client's port as some
// balancers write it ("192.0.2.1:51234", "[2001:db8::1]:443", "[2001:db8::1]").
std::optional<ip::address> forwarded_address(std::string_view entry) {
  if (auto a = parse_address(entry)) return a;
  if (entry.starts_with('[')) {
    auto close = entry.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    auto rest = entry.substr(close + 1);
    if (!rest.empty() && !(rest.front() == ':' && all_digits(rest.substr(1)))) return std::nullopt;
    auto a = parse_address(entry.substr(1, close - 1));
    return a && a->is_v6() ? a : std::nullopt;
  }
  auto colon = entry.find(':');
  if (colon == std::string_view::npos || !all_digits(entry.substr(colon + 1))) return std::nullopt;
  auto a = parse_address(entry.substr(0, colon));
  return a && a->is_v4() ? a : std::nullopt;
}

}  // namespace

ip::address unmapped(const ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    return ip::make_address_v4(ip::v4_mapped, address.to_v6());
  return address;
}

std::optional<TrustedProxies> TrustedProxies::parse(std::string_view list, std::string& error) {
  TrustedProxies out;
  std::size_t i = 0;
  while (i <= list.size()) {
    auto end = list.find_first_of(", ", i);
    if (end == std::string_view::npos) end = list.size();
    auto entry = trim(list.substr(i, end - i));
    i = end + 1;
    if (entry.empty()) continue;
    boost::system::error_code ec;
    std::string text(entry);
    if (text.find('/') == std::string::npos) text += text.find(':') == std::string::npos ? "/32" : "/128";
    auto v4 = ip::make_network_v4(text, ec);
    if (!ec) {
      out.networks_.emplace_back(v4.canonical());
      continue;
    }
    ec.clear();
    auto v6 = ip::make_network_v6(text, ec);
    if (!ec) {
      out.networks_.emplace_back(v6.canonical());
      continue;
    }
    error = "\"" + std::string(entry) + "\" is not an IP address or CIDR network";
    return std::nullopt;
  }
  return out;
}

bool TrustedProxies::contains(const ip::address& raw) const {
  auto a = unmapped(raw);
  return std::any_of(networks_.begin(), networks_.end(), [&](const auto& n) {
    if (const auto* v4 = std::get_if<ip::network_v4>(&n))
      return a.is_v4() && ip::make_network_v4(a.to_v4(), v4->prefix_length()).canonical() == *v4;
    const auto& v6 = std::get<ip::network_v6>(n);
    return a.is_v6() && ip::make_network_v6(a.to_v6(), v6.prefix_length()).canonical() == v6;
  });
}

std::string TrustedProxies::client_of(const ip::address& peer, std::string_view forwarded_for) const {
  auto client = unmapped(peer);
  // Right to left: each hop appended the address it saw.
  while (contains(client) && !forwarded_for.empty()) {
    auto comma = forwarded_for.rfind(',');
    auto entry = trim(comma == std::string_view::npos ? forwarded_for : forwarded_for.substr(comma + 1));
    forwarded_for = comma == std::string_view::npos ? std::string_view{} : forwarded_for.substr(0, comma);
    auto a = forwarded_address(entry);
    if (!a) break;  // garbage: count against the last address we could trust
    client = *a;
  }
  return limit_key(client);
}

// One IPv6 host is usually handed a whole /64: counted per address, it could
// take a new bucket for every request.
std::string limit_key(const ip::address& address) {
  if (!address.is_v6()) return address.to_string();
  return ip::make_network_v6(address.to_v6(), 64).canonical().to_string();
}

}  // namespace chat::limits
