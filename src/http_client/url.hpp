#pragma once
// Where a provider request goes: the parts of an http(s) URL the client needs,
// and the HTTPS_PROXY / NO_PROXY rules. Userinfo in a URL is kept apart so it
// never reaches a log line or an error message.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chat::http_client {

struct HttpUrl {
  bool tls = false;
  std::string host;  // without brackets for IPv6 literals
  std::uint16_t port = 0;
  std::string path;      // starts with '/'; the base path for a base URL
  std::string query;     // as written, without the '?': kept on every request (an API version)
  std::string userinfo;  // "user:pass" (proxy credentials); secret

  // "host:port" as used in Host and CONNECT lines (brackets around IPv6).
  std::string authority() const;
  // scheme://host:port, without userinfo: safe for logs and errors.
  std::string origin() const;
};

// nullopt unless `text` is an absolute http:// or https:// URL with a host.
std::optional<HttpUrl> parse_http_url(std::string_view text);

// `base` + `suffix` ("/chat/completions"), with exactly one slash between.
std::string join_path(std::string_view base, std::string_view suffix);

// NO_PROXY semantics as curl has them: "*" matches all; "example.com" and
// ".example.com" match the host and its subdomains; entries are comma or
// space separated, ports are ignored.
bool no_proxy_matches(std::string_view no_proxy, std::string_view host);

}  // namespace chat::http_client
