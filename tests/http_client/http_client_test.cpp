// The HTTP client under the providers: TLS verification (CA, host name, SNI),
// HTTPS_PROXY CONNECT tunnels, NO_PROXY, and keep-alive over TLS. Driven
// through the openai provider against local HTTPS servers with certificates
// made at test time.
#include <gtest/gtest.h>

#include "http_client/client_loop.hpp"
#include "http_client/fake_http_server.hpp"
#include "http_client/test_tls.hpp"
#include "providers/http_streaming_provider.hpp"
#include "providers/openai_protocol.hpp"
#include "providers/recording_sink.hpp"

using namespace std::chrono_literals;

namespace chat::providers::test {
namespace {

using namespace http_client::test;

Script happy_stream() {
  return sse_script({"data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"secure\"}}]}\n\n",
                     "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                     "data: [DONE]\n\n"});
}

class HttpClientTest : public ::testing::Test {
 protected:
  std::shared_ptr<RecordingSink> run(const std::string& base_url, http_client::HttpClientOptions options) {
    HttpStreamingSettings s;
    s.api_key = "sk-tls-test";
    s.base_url = base_url + "/v1";
    s.retry.backoff_base = 5ms;
    auto provider = std::make_shared<HttpStreamingProvider>(loop.client(std::move(options)), std::make_shared<OpenAiProtocol>(), s);
    auto sink = std::make_shared<RecordingSink>();
    generations.push_back(provider->start(chat_request(), "m", sink));
    EXPECT_TRUE(sink->wait(10s));
    EXPECT_EQ(sink->finals(), 1);
    return sink;
  }
  http_client::HttpClientOptions trusting(const TestCertificate& cert) {
    auto o = ClientLoop::fast_options();
    o.extra_ca_pem = cert.cert_pem;
    return o;
  }

  TestCertificate cert = make_certificate("DNS:localhost,IP:127.0.0.1");
  ClientLoop loop;
  std::vector<std::shared_ptr<Generation>> generations;
};

TEST_F(HttpClientTest, TlsWithATrustedCertificateSendsSniAndVerifiesTheName) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(cert));
  auto sink = run(server.base_url(), trusting(cert));  // https://localhost:port
  EXPECT_EQ(sink->text(), "secure");
  EXPECT_EQ(server.last_sni(), "localhost");
}

TEST_F(HttpClientTest, TlsToAnIpAddressChecksTheIpAndSendsNoSni) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(cert));
  auto sink = run("https://127.0.0.1:" + std::to_string(server.port()), trusting(cert));
  EXPECT_EQ(sink->text(), "secure");
  EXPECT_EQ(server.last_sni(), "");
}

TEST_F(HttpClientTest, UntrustedCertificateFailsWithoutRetrying) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(cert));
  auto sink = run(server.base_url(), ClientLoop::fast_options());  // system CAs only
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("TLS handshake"), std::string::npos) << sink->error_message();
  EXPECT_NE(sink->error_message().find("certificate verify failed"), std::string::npos) << sink->error_message();
  EXPECT_TRUE(server.requests().empty());
  EXPECT_EQ(server.connections(), 1u);
}

TEST_F(HttpClientTest, CertificateForAnotherNameIsRejected) {
  auto other = make_certificate("DNS:api.example.invalid");
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(other));
  auto sink = run(server.base_url(), trusting(other));
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(HttpClientTest, KeepAliveOverTls) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(cert));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(run(server.base_url(), trusting(cert))->text(), "secure");
  // Each run() above made its own client (and pool); one client reuses:
  auto options = trusting(cert);
  HttpStreamingSettings s;
  s.api_key = "k";
  s.base_url = server.base_url() + "/v1";
  auto client = loop.client(options);
  HttpStreamingProvider provider(client, std::make_shared<OpenAiProtocol>(), s);
  for (int i = 0; i < 3; ++i) {
    auto sink = std::make_shared<RecordingSink>();
    auto g = provider.start(chat_request(), "m", sink);
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->text(), "secure");
    for (int wait = 0; wait < 200 && client->pool().idle() == 0; ++wait) std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(client->stats().connections_opened, 1u);
  EXPECT_EQ(client->stats().connections_reused, 2u);
}

TEST_F(HttpClientTest, HttpsProxyTunnelWithCredentials) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(cert));
  FakeConnectProxy proxy;
  auto options = trusting(cert);
  options.https_proxy = http_client::parse_http_url("http://user:pw@127.0.0.1:" + std::to_string(proxy.port()));
  auto sink = run(server.base_url(), options);
  EXPECT_EQ(sink->text(), "secure");
  auto connects = proxy.connects();
  ASSERT_EQ(connects.size(), 1u);
  EXPECT_EQ(connects[0].first, "localhost:" + std::to_string(server.port()));
  EXPECT_EQ(connects[0].second, "Basic dXNlcjpwdw==");
  EXPECT_EQ(server.last_sni(), "localhost");  // TLS runs end to end through the tunnel
}

TEST_F(HttpClientTest, ProxyRefusingTheTunnel) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(cert));
  FakeConnectProxy proxy(407);
  auto options = trusting(cert);
  options.https_proxy = http_client::parse_http_url("http://127.0.0.1:" + std::to_string(proxy.port()));
  auto sink = run(server.base_url(), options);
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("proxy"), std::string::npos);
  EXPECT_EQ(server.connections(), 0u);
}

TEST_F(HttpClientTest, NoProxyAndPlainHttpGoDirect) {
  FakeServer tls_server([](const ReceivedRequest&, std::size_t) { return happy_stream(); }, server_tls(cert));
  FakeServer plain_server([](const ReceivedRequest&, std::size_t) { return happy_stream(); });
  FakeConnectProxy proxy;
  auto options = trusting(cert);
  options.https_proxy = http_client::parse_http_url("http://127.0.0.1:" + std::to_string(proxy.port()));
  options.no_proxy = "example.com,localhost";
  EXPECT_EQ(run(tls_server.base_url(), options)->text(), "secure");
  options.no_proxy.clear();
  EXPECT_EQ(run(plain_server.base_url(), options)->text(), "secure");  // HTTPS_PROXY is for https only
  EXPECT_TRUE(proxy.connects().empty());
}

}  // namespace
}  // namespace chat::providers::test
