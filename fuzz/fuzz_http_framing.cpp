// Raw request bytes through Beast's request parser with chatd's limits, and the
// framing rules of HttpSession's header phase on every header that parses. A
// request let through with a Transfer-Encoding must be one Beast reads as
// chunked: anything else is a smuggling hole.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/framing.hpp"

namespace http = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  // Several requests in a row, as on a keep-alive connection.
  for (int requests = 0; requests < 8 && !rest.empty(); ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    parser.eager(false);
    boost::beast::error_code ec;
    bool checked = false;
    while (!rest.empty() && !parser.is_done()) {
      auto used = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
      rest.remove_prefix(used);
      if (ec == http::error::need_more) return 0;
      if (ec) return 0;  // answered 400/413/431 and closed
      if (parser.is_header_done() && !checked) {
        checked = true;
        auto bad = chat::http::check_framing(parser.get().base(), parser.chunked());
        if (bad) return 0;  // answered and closed
        if (chat::http::check_host(parser.get().base())) return 0;
        if (parser.get().count(http::field::transfer_encoding) && !parser.chunked()) std::abort();
      }
      if (used == 0) return 0;
    }
    if (!parser.is_done()) return 0;
  }
  return 0;
}
