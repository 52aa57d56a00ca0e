// check_framing on headers read by Beast's own parser, as HttpSession reads
// them: what Beast lets through and the rule decides (RFC 9112 §6.3).
#include "http/framing.hpp"

#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>

#include <optional>
#include <string>

namespace chat::http {
namespace {

struct Parsed {
  boost::beast::error_code ec;  // Beast's own verdict on the header
  std::optional<HeaderError> framing;
};

Parsed parse_header(const std::string& head) {
  beast_http::request_parser<beast_http::string_body> parser;
  Parsed out;
  parser.put(boost::asio::buffer(head), out.ec);
  if (!out.ec && !parser.is_header_done()) out.ec = beast_http::error::need_more;
  if (!out.ec) out.framing = check_framing(parser.get().base(), parser.chunked());
  return out;
}

std::string request(const std::string& headers, const char* version = "1.1") {
  return std::string("POST /api/chat HTTP/") + version + "\r\nHost: x\r\n" + headers + "\r\n";
}

TEST(FramingTest, PlainAndChunkedRequestsPass) {
  for (auto h : {"", "Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n", "Transfer-Encoding: CHUNKED\r\n"}) {
    auto p = parse_header(request(h));
    EXPECT_FALSE(p.ec) << h << p.ec.message();
    EXPECT_FALSE(p.framing) << h << p.framing->message;
  }
}

TEST(FramingTest, AFinalCodingOtherThanChunkedIsA400) {
  // Beast takes each of these as "no body": the body would be read as the next request.
  for (auto h : {"Transfer-Encoding: xchunked\r\n", "Transfer-Encoding: chunkedx\r\n", "Transfer-Encoding: gzip\r\n",
                 "Transfer-Encoding: chunked, gzip\r\n", "Transfer-Encoding: identity\r\n",
                 "Transfer-Encoding: \"chunked\"\r\n", "Transfer-Encoding: chunked, chunked\r\n",
                 "Transfer-Encoding: ,\r\n", "Transfer-Encoding: \r\n", "Transfer-Encoding: chunked;x=1\r\n"}) {
    auto p = parse_header(request(h));
    if (p.ec) continue;  // Beast refused it itself: a 400 as well
    ASSERT_TRUE(p.framing) << h;
    EXPECT_EQ(p.framing->status, Status::bad_request) << h;
    EXPECT_EQ(p.framing->code, "bad_request") << h;
  }
}

TEST(FramingTest, AnotherCodingBeforeChunkedIsA501) {
  for (auto h : {"Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                 "Transfer-Encoding: deflate,chunked\r\n"}) {
    auto p = parse_header(request(h));
    ASSERT_FALSE(p.ec) << h << p.ec.message();
    ASSERT_TRUE(p.framing) << h;
    EXPECT_EQ(p.framing->status, Status::not_implemented) << h;
    EXPECT_EQ(p.framing->code, "not_implemented") << h;
  }
}

TEST(FramingTest, TransferEncodingWithContentLengthIsRefusedByBeast) {
  for (auto h : {"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                 "Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n",
                 "Content-Length: -1\r\n", "Content-Length: 1e3\r\n", "Content-Length: 99999999999999999999999\r\n"}) {
    auto p = parse_header(request(h));
    EXPECT_TRUE(p.ec || p.framing) << h;
  }
}

TEST(FramingTest, TransferEncodingInHttp10IsA400) {
  auto p = parse_header(request("Transfer-Encoding: chunked\r\n", "1.0"));
  ASSERT_FALSE(p.ec) << p.ec.message();
  ASSERT_TRUE(p.framing);
  EXPECT_EQ(p.framing->status, Status::bad_request);
}

// The Host rule on a GET head with exactly the given header lines.
std::optional<HeaderError> host_verdict(const std::string& lines, const char* version = "1.1") {
  beast_http::request_parser<beast_http::string_body> parser;
  boost::beast::error_code ec;
  std::string head = std::string("GET /health HTTP/") + version + "\r\n" + lines + "\r\n";
  parser.put(boost::asio::buffer(head), ec);
  EXPECT_FALSE(ec) << head << ec.message();
  EXPECT_TRUE(parser.is_header_done()) << head;
  return check_host(parser.get().base());
}

TEST(HostTest, OneValidHostPasses) {
  for (auto h : {"Host: x\r\n", "Host: chat.example.com:8080\r\n", "Host: 127.0.0.1:80\r\n", "Host: [::1]:8080\r\n",
                 "Host: xn--bcher-kva.example\r\n", "Host:\r\n"}) {
    auto bad = host_verdict(h);
    EXPECT_FALSE(bad) << h << bad->message;
  }
}

TEST(HostTest, AnHttp11RequestWithoutHostIsA400) {
  auto bad = host_verdict("Accept: */*\r\n");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, Status::bad_request);
  EXPECT_EQ(bad->code, "bad_request");
  EXPECT_FALSE(host_verdict("Accept: */*\r\n", "1.0")) << "HTTP/1.0 has no Host requirement";
}

TEST(HostTest, TwoHostLinesAreA400EvenWhenTheyAgree) {
  for (auto version : {"1.1", "1.0"}) {
    for (auto h : {"Host: a\r\nHost: b\r\n", "Host: a\r\nHost: a\r\n"}) {
      auto bad = host_verdict(h, version);
      ASSERT_TRUE(bad) << version << " " << h;
      EXPECT_EQ(bad->status, Status::bad_request);
    }
  }
}

TEST(HostTest, AValueThatIsNoHostAndPortIsA400) {
  for (auto h : {"Host: a b\r\n", "Host: user@x\r\n", "Host: x:http\r\n", "Host: x/y\r\n", "Host: [::1\r\n",
                 "Host: x?y\r\n"}) {
    auto bad = host_verdict(h);
    ASSERT_TRUE(bad) << h;
    EXPECT_EQ(bad->status, Status::bad_request) << h;
  }
}

}  // namespace
}  // namespace chat::http
