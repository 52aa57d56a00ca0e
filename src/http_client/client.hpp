#pragma once
// The providers' HTTP/1.1 client: TLS with certificate and host-name checks
// (system CA store, SNI), HTTPS_PROXY CONNECT tunnels, connect and read
// timeouts, and a keep-alive pool per origin. Requests are made by HttpCall
// objects that live on their caller's strand: no thread per stream, so one
// process holds hundreds of provider streams at once.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http_client/pool.hpp"
#include "http_client/url.hpp"

namespace chat::http_client {

// Failures the client itself detects (transport errors keep their own codes).
enum class HttpClientError {
  connect_timeout = 1,  // DNS + TCP + proxy + TLS took longer than connect_timeout
  read_timeout,         // the server was silent for read_timeout
  proxy_refused,        // the proxy answered CONNECT with a non-2xx status
  bad_proxy_response,   // the proxy spoke something other than HTTP
  aborted,              // HttpCall::abort()
};
const boost::system::error_category& http_client_category();
boost::system::error_code make_error_code(HttpClientError e);

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds read_timeout{60'000};
  std::optional<HttpUrl> https_proxy;  // http:// proxies only
  std::string no_proxy;
  std::size_t max_idle_per_origin = 32;
  std::chrono::milliseconds max_idle{30'000};
  std::string extra_ca_pem;  // trusted besides the system store (tests, private CAs)
  std::string user_agent = "chat-worker/0.1";
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;  // name, value; in order

struct HttpRequest {
  std::string method = "POST";
  HttpUrl url;  // origin and path
  HttpHeaders headers;
  std::string body;
};

class HttpClient {
 public:
  // Throws std::runtime_error when the TLS context cannot be set up.
  HttpClient(boost::asio::any_io_executor executor, HttpClientOptions options);

  const HttpClientOptions& options() const { return options_; }
  boost::asio::any_io_executor executor() const { return executor_; }
  boost::asio::ssl::context& tls_context() { return tls_; }
  HttpPool& pool() { return pool_; }

  // A short-lived DNS cache: a burst of new streams to one host resolves once
  // (Asio resolves on one background thread, one name at a time).
  std::optional<boost::asio::ip::tcp::resolver::results_type> cached_endpoints(const std::string& key);
  void cache_endpoints(const std::string& key, boost::asio::ip::tcp::resolver::results_type results);

  // Whether a request to `url` goes through the proxy.
  bool proxied(const HttpUrl& url) const;

  struct Stats {
    std::atomic<std::uint64_t> connections_opened{0};
    std::atomic<std::uint64_t> connections_reused{0};
  };
  Stats& stats() { return stats_; }

 private:
  boost::asio::any_io_executor executor_;
  HttpClientOptions options_;
  boost::asio::ssl::context tls_;
  HttpPool pool_;
  std::mutex dns_mutex_;
  std::map<std::string, std::pair<std::chrono::steady_clock::time_point, boost::asio::ip::tcp::resolver::results_type>>
      dns_;
  Stats stats_;
};

}  // namespace chat::http_client

template <>
struct boost::system::is_error_code_enum<chat::http_client::HttpClientError> : std::true_type {};
