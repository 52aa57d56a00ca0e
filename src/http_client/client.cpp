#include "http_client/client.hpp"

#include <boost/asio/buffer.hpp>

#include <stdexcept>

namespace asio = boost::asio;

namespace chat::http_client {
namespace {

constexpr std::chrono::seconds kDnsTtl{30};

class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "http_client"; }
  std::string message(int ev) const override {
    switch (static_cast<HttpClientError>(ev)) {
      case HttpClientError::connect_timeout: return "connect timed out";
      case HttpClientError::read_timeout: return "no data before the read timeout";
      case HttpClientError::proxy_refused: return "the proxy refused the tunnel";
      case HttpClientError::bad_proxy_response: return "the proxy sent an invalid response";
      case HttpClientError::aborted: return "aborted";
    }
    return "http client error";
  }
};

}  // namespace

const boost::system::error_category& http_client_category() {
  static const Category category;
  return category;
}

boost::system::error_code make_error_code(HttpClientError e) {
  return {static_cast<int>(e), http_client_category()};
}

HttpClient::HttpClient(asio::any_io_executor executor, HttpClientOptions options)
    : executor_(std::move(executor)), options_(std::move(options)), tls_(asio::ssl::context::tls_client),
      pool_(options_.max_idle_per_origin, options_.max_idle) {
  tls_.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  tls_.set_verify_mode(asio::ssl::verify_peer);
  boost::system::error_code ec;
  tls_.set_default_verify_paths(ec);
  if (ec) throw std::runtime_error("cannot load the system CA certificates: " + ec.message());
  if (!options_.extra_ca_pem.empty()) {
    tls_.add_certificate_authority(asio::buffer(options_.extra_ca_pem), ec);
    if (ec) throw std::runtime_error("cannot load the extra CA certificate: " + ec.message());
  }
}

std::optional<asio::ip::tcp::resolver::results_type> HttpClient::cached_endpoints(const std::string& key) {
  std::lock_guard lock(dns_mutex_);
  auto it = dns_.find(key);
  if (it == dns_.end()) return std::nullopt;
  if (std::chrono::steady_clock::now() - it->second.first > kDnsTtl) {
    dns_.erase(it);
    return std::nullopt;
  }
  return it->second.second;
}

void HttpClient::cache_endpoints(const std::string& key, asio::ip::tcp::resolver::results_type results) {
  std::lock_guard lock(dns_mutex_);
  if (dns_.size() > 1024) dns_.clear();  // a bound, not an LRU: providers are a handful of hosts
  dns_[key] = {std::chrono::steady_clock::now(), std::move(results)};
}

bool HttpClient::proxied(const HttpUrl& url) const {
  // Like curl: HTTPS_PROXY covers https targets only; http targets (local
  // model servers, the tests) are reached directly.
  return url.tls && options_.https_proxy && !no_proxy_matches(options_.no_proxy, url.host);
}

}  // namespace chat::http_client
