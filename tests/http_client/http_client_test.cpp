// The HTTP client on its own: TLS verification (CA, host name, SNI),
// HTTPS_PROXY CONNECT tunnels, NO_PROXY, and keep-alive over TLS, against
// local HTTPS servers with certificates made at test time. Each test drives
// HttpCall the way a provider does: start, read the body to its end, release.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include "http_client/call.hpp"
#include "http_client/client_loop.hpp"
#include "http_client/fake_http_server.hpp"
#include "http_client/test_tls.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace chat::http_client::test {
namespace {

Script secure_reply() { return Script{write(response(200, "text/plain", "secure"))}; }

struct Exchange {
  boost::system::error_code error;
  HttpCall::Phase phase = HttpCall::Phase::connect;  // where it ended
  unsigned status = 0;
  std::string body;
};

asio::awaitable<Exchange> exchange_on_strand(std::shared_ptr<HttpClient> client, HttpRequest request) {
  auto call = std::make_shared<HttpCall>(client, co_await asio::this_coro::executor);
  Exchange e;
  e.error = co_await call->start(request);
  e.status = call->status();
  while (!e.error && !call->done()) e.error = co_await call->read_body(e.body);
  e.phase = call->phase();
  if (e.error) call->abort();
  else call->release();
  co_return e;
}

class HttpClientTest : public ::testing::Test {
 protected:
  Exchange exchange(const std::shared_ptr<HttpClient>& client, const std::string& url) {
    HttpRequest request;
    request.url = *parse_http_url(url);
    auto done = asio::co_spawn(asio::make_strand(loop.executor()), exchange_on_strand(client, std::move(request)),
                               asio::use_future);
    if (done.wait_for(10s) != std::future_status::ready) {
      ADD_FAILURE() << "no answer from " << url;
      return {};
    }
    return done.get();
  }
  Exchange exchange(const std::string& url, HttpClientOptions options) {
    return exchange(loop.client(std::move(options)), url);
  }
  HttpClientOptions trusting(const TestCertificate& cert) {
    auto o = ClientLoop::fast_options();
    o.extra_ca_pem = cert.cert_pem;
    return o;
  }
  static bool tls_error(const boost::system::error_code& ec) {
    return ec.category() == asio::error::get_ssl_category() || ec.category() == asio::ssl::error::get_stream_category();
  }

  TestCertificate cert = make_certificate("DNS:localhost,IP:127.0.0.1");
  ClientLoop loop;
};

TEST_F(HttpClientTest, TlsWithATrustedCertificateSendsSniAndVerifiesTheName) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(cert));
  auto e = exchange(server.base_url(), trusting(cert));  // https://localhost:port
  EXPECT_FALSE(e.error) << e.error.message();
  EXPECT_EQ(e.status, 200u);
  EXPECT_EQ(e.body, "secure");
  EXPECT_EQ(server.last_sni(), "localhost");
}

TEST_F(HttpClientTest, TlsToAnIpAddressChecksTheIpAndSendsNoSni) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(cert));
  auto e = exchange("https://127.0.0.1:" + std::to_string(server.port()), trusting(cert));
  EXPECT_EQ(e.body, "secure");
  EXPECT_EQ(server.last_sni(), "");
}

TEST_F(HttpClientTest, UntrustedCertificateFailsTheHandshake) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(cert));
  auto e = exchange(server.base_url(), ClientLoop::fast_options());  // system CAs only
  EXPECT_TRUE(tls_error(e.error)) << e.error.message();
  EXPECT_EQ(e.phase, HttpCall::Phase::connect);
  EXPECT_NE(e.error.message().find("certificate verify failed"), std::string::npos) << e.error.message();
  EXPECT_TRUE(server.requests().empty());
  EXPECT_EQ(server.connections(), 1u);
}

TEST_F(HttpClientTest, CertificateForAnotherNameIsRejected) {
  auto other = make_certificate("DNS:api.example.invalid");
  FakeServer server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(other));
  auto e = exchange(server.base_url(), trusting(other));
  EXPECT_TRUE(tls_error(e.error)) << e.error.message();
  EXPECT_EQ(e.phase, HttpCall::Phase::connect);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(HttpClientTest, KeepAliveOverTls) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(cert));
  auto client = loop.client(trusting(cert));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(exchange(client, server.base_url()).body, "secure");
  EXPECT_EQ(client->stats().connections_opened, 1u);
  EXPECT_EQ(client->stats().connections_reused, 2u);
  EXPECT_EQ(server.connections(), 1u);
}

TEST_F(HttpClientTest, HttpsProxyTunnelWithCredentials) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(cert));
  FakeConnectProxy proxy;
  auto options = trusting(cert);
  options.https_proxy = parse_http_url("http://user:pw@127.0.0.1:" + std::to_string(proxy.port()));
  auto e = exchange(server.base_url(), options);
  EXPECT_EQ(e.body, "secure");
  auto connects = proxy.connects();
  ASSERT_EQ(connects.size(), 1u);
  EXPECT_EQ(connects[0].first, "localhost:" + std::to_string(server.port()));
  EXPECT_EQ(connects[0].second, "Basic dXNlcjpwdw==");
  EXPECT_EQ(server.last_sni(), "localhost");  // TLS runs end to end through the tunnel
}

TEST_F(HttpClientTest, ProxyRefusingTheTunnel) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(cert));
  FakeConnectProxy proxy(407);
  auto options = trusting(cert);
  options.https_proxy = parse_http_url("http://127.0.0.1:" + std::to_string(proxy.port()));
  auto e = exchange(server.base_url(), options);
  EXPECT_EQ(e.error, HttpClientError::proxy_refused) << e.error.message();
  EXPECT_EQ(e.phase, HttpCall::Phase::connect);
  EXPECT_EQ(server.connections(), 0u);
}

TEST_F(HttpClientTest, NoProxyAndPlainHttpGoDirect) {
  FakeServer tls_server([](const ReceivedRequest&, std::size_t) { return secure_reply(); }, server_tls(cert));
  FakeServer plain_server([](const ReceivedRequest&, std::size_t) { return secure_reply(); });
  FakeConnectProxy proxy;
  auto options = trusting(cert);
  options.https_proxy = parse_http_url("http://127.0.0.1:" + std::to_string(proxy.port()));
  options.no_proxy = "example.com,localhost";
  EXPECT_EQ(exchange(tls_server.base_url(), options).body, "secure");
  options.no_proxy.clear();
  EXPECT_EQ(exchange(plain_server.base_url(), options).body, "secure");  // HTTPS_PROXY is for https only
  EXPECT_TRUE(proxy.connects().empty());
}

// An interim answer comes before the final one, asked for or not: the
// request gets the final one, and the connection carries no answer over to
// the next request.
TEST_F(HttpClientTest, InterimAnswersAreReadPastToTheFinalOne) {
  FakeServer server([](const ReceivedRequest&, std::size_t index) {
    if (index > 0) return Script{write(response(200, "text/plain", "second"))};
    return Script{write("HTTP/1.1 100 Continue\r\n\r\n"),
                  write("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"), sleep(200ms),
                  write(response(200, "text/plain", "first"))};
  });
  auto client = loop.client(ClientLoop::fast_options());
  auto first = exchange(client, server.base_url());
  EXPECT_FALSE(first.error) << first.error.message();
  EXPECT_EQ(first.status, 200u);
  EXPECT_EQ(first.body, "first");
  auto second = exchange(client, server.base_url());
  EXPECT_FALSE(second.error) << second.error.message();
  EXPECT_EQ(second.body, "second");
  EXPECT_EQ(server.connections(), 1u) << "the connection was kept for the second request";
}

TEST_F(HttpClientTest, AnAnswerThatNeverGetsPastInterimsIsMalformed) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    Script script;
    for (int i = 0; i < 20; ++i) script.push_back(write("HTTP/1.1 100 Continue\r\n\r\n"));
    script.push_back(hang());
    return script;
  });
  auto got = exchange(server.base_url(), ClientLoop::fast_options());
  EXPECT_EQ(got.error, boost::beast::http::error::bad_status) << got.error.message();
}

TEST_F(HttpClientTest, ASwitchOfProtocolsNobodyAskedForIsMalformed) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
                  hang()};
  });
  auto got = exchange(server.base_url(), ClientLoop::fast_options());
  EXPECT_EQ(got.error, boost::beast::http::error::bad_status) << got.error.message();
}

}  // namespace
}  // namespace chat::http_client::test
