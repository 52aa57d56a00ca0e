#include "http/framing.hpp"

#include <vector>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/url/parse.hpp>

namespace chat::http {
namespace {

HeaderError bad(std::string message) { return {Status::bad_request, "bad_request", std::move(message)}; }

}  // namespace

std::optional<HeaderError> check_framing(const beast_http::request_header<>& header, bool parser_chunked) {
  auto [first, last] = header.equal_range(beast_http::field::transfer_encoding);
  if (first == last) {
    // Without Transfer-Encoding Beast has framed the body by Content-Length
    // (or none); its own checks cover that header.
    if (parser_chunked) return bad("inconsistent request framing");
    return std::nullopt;
  }
  // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing.
  if (header.version() < 11) return bad("Transfer-Encoding is not allowed in an HTTP/1.0 request");
  // All lines together, as one list (RFC 9110 §5.3).
  std::vector<std::string> codings;
  for (auto it = first; it != last; ++it) {
    auto value = it->value();
    // token_list skips what is not a token; an empty element or garbage must
    // not make "x, chunked" look like "chunked".
    if (value.find_first_of("\"\\") != boost::beast::string_view::npos)
      return bad("malformed Transfer-Encoding");
    // chunked has no parameters; a peer that reads "chunked;x" as a coding of
    // its own frames the body otherwise.
    if (value.find(';') != boost::beast::string_view::npos)
      return bad("transfer coding parameters are not accepted");
    for (auto token : beast_http::token_list{value}) codings.emplace_back(token);
  }
  if (codings.empty()) return bad("empty Transfer-Encoding");
  const auto is_chunked = [](const std::string& c) { return boost::beast::iequals(c, "chunked"); };
  if (!is_chunked(codings.back()))
    return bad("the final transfer coding of a request must be chunked (RFC 9112 §6.3)");
  for (std::size_t i = 0; i + 1 < codings.size(); ++i) {
    if (is_chunked(codings[i])) return bad("chunked must be applied once (RFC 9112 §7.1)");
  }
  if (codings.size() > 1)
    return HeaderError{Status::not_implemented, "not_implemented",
                       "transfer coding " + codings.front() + " is not supported; send the body with chunked alone"};
  if (!parser_chunked) return bad("inconsistent request framing");  // e.g. chunked split over two lines
  return std::nullopt;
}

std::optional<HeaderError> check_host(const beast_http::request_header<>& header) {
  auto lines = header.count(beast_http::field::host);
  if (lines > 1) return bad("more than one Host header");
  if (lines == 0) {
    if (header.version() >= 11) return bad("an HTTP/1.1 request needs a Host header");
    return std::nullopt;
  }
  auto value = header[beast_http::field::host];
  auto authority = boost::urls::parse_authority(std::string_view(value.data(), value.size()));
  if (!authority || authority->has_userinfo()) return bad("the Host header is not a valid host[:port]");
  return std::nullopt;
}

}  // namespace chat::http
