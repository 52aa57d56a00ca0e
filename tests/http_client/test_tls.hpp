#pragma once
// Self-signed certificates made at test time (no files, no openssl CLI), and
// server TLS contexts built from them.

#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string>

namespace chat::http_client::test {

struct TestCertificate {
  std::string cert_pem;
  std::string key_pem;
};

// A self-signed CA-style certificate for `subject_alt_names`, e.g.
// "DNS:localhost,IP:127.0.0.1".
TestCertificate make_certificate(const std::string& subject_alt_names);

std::shared_ptr<boost::asio::ssl::context> server_tls(const TestCertificate& cert);

}  // namespace chat::http_client::test
