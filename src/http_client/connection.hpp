#pragma once
// One client connection to a provider (or through a proxy tunnel to it): a
// plain or TLS stream plus the read buffer that belongs to it. Owned by one
// HttpCall while in use, by the HttpPool while idle; never shared.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <chrono>
#include <string>
#include <variant>

namespace chat::http_client {

class HttpConnection {
 public:
  using Plain = boost::asio::ip::tcp::socket;
  using Tls = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  HttpConnection(Plain socket, std::string pool_key) : stream(std::move(socket)), pool_key(std::move(pool_key)) {}

  Plain& socket() {
    if (auto* tls = std::get_if<Tls>(&stream)) return tls->next_layer();
    return std::get<Plain>(stream);
  }

  // Ends every pending operation (operation_aborted). No TLS close_notify: the
  // peer learns from the TCP close, and a hung peer cannot stall us.
  void close() {
    boost::system::error_code ignored;
    socket().shutdown(Plain::shutdown_both, ignored);
    socket().close(ignored);
  }

  std::variant<Plain, Tls> stream;
  boost::beast::flat_buffer buffer;  // bytes read but not parsed yet
  std::string pool_key;              // scheme://host:port
  std::chrono::steady_clock::time_point idle_since{};
  unsigned requests = 0;  // served on this connection so far
};

}  // namespace chat::http_client
