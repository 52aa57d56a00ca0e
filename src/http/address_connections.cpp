#include "http/address_connections.hpp"

namespace chat::http {

namespace {

namespace ip = boost::asio::ip;

// An IPv6 host is usually handed a whole /64: counted per address, it could
// open a connection from each one (as the request limit counts it, limits::limit_key).
std::string key_of(const ip::address& a) {
  if (a.is_v4()) return a.to_string();
  if (a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6()).to_string();
  return ip::make_network_v6(a.to_v6(), 64).canonical().to_string();
}

}  // namespace

std::shared_ptr<void> AddressConnections::admit(const boost::asio::ip::address& peer) {
  static int unlimited;  // a ticket that owns nothing
  if (max_ == 0 || (exempt_ && exempt_(peer))) return std::shared_ptr<void>(&unlimited, [](void*) {});
  auto key = key_of(peer);
  {
    std::lock_guard lock(mutex_);
    auto& n = open_[key];
    if (n >= max_) return nullptr;
    ++n;
  }
  return std::shared_ptr<void>(&unlimited, [self = shared_from_this(), key](void*) { self->release(key); });
}

std::size_t AddressConnections::open(const boost::asio::ip::address& peer) const {
  std::lock_guard lock(mutex_);
  auto it = open_.find(key_of(peer));
  return it == open_.end() ? 0 : it->second;
}

void AddressConnections::release(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = open_.find(key);
  if (it != open_.end() && --it->second == 0) open_.erase(it);
}

}  // namespace chat::http
