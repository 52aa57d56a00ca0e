#include "http_client/url.hpp"

#include <boost/url/parse.hpp>

#include <algorithm>
#include <cctype>

#include "common/port.hpp"

namespace chat::http_client {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

}  // namespace

std::string HttpUrl::authority() const {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string HttpUrl::origin() const { return (tls ? "https://" : "http://") + authority(); }

std::optional<HttpUrl> parse_http_url(std::string_view text) {
  auto parsed = boost::urls::parse_absolute_uri(text);
  if (!parsed) return std::nullopt;
  const auto& u = *parsed;
  HttpUrl out;
  auto scheme = lower(u.scheme());
  if (scheme == "https") out.tls = true;
  else if (scheme != "http") return std::nullopt;
  if (!u.has_authority()) return std::nullopt;
  std::string host(u.encoded_host_address());
  if (u.host_type() == boost::urls::host_type::ipv6) host = u.host_address();  // drops the brackets
  if (host.empty()) return std::nullopt;
  out.host = lower(host);
  if (u.has_port()) {
    // A wrapped port would send a key to the wrong server.
    auto port = parse_port(u.port());
    if (!port) return std::nullopt;
    out.port = *port;
  } else {
    out.port = out.tls ? 443 : 80;
  }
  out.path = std::string(u.encoded_path());
  if (out.path.empty() || out.path.front() != '/') out.path.insert(out.path.begin(), '/');
  if (u.has_query()) out.query = std::string(u.encoded_query());
  if (u.has_userinfo()) out.userinfo = u.userinfo();
  return out;
}

std::string join_path(std::string_view base, std::string_view suffix) {
  std::string out(base);
  while (!out.empty() && out.back() == '/') out.pop_back();
  if (suffix.empty() || suffix.front() != '/') out.push_back('/');
  out.append(suffix);
  return out;
}

bool no_proxy_matches(std::string_view no_proxy, std::string_view host_in) {
  auto host = lower(host_in);
  std::size_t i = 0;
  while (i < no_proxy.size()) {
    auto end = no_proxy.find_first_of(", ", i);
    if (end == std::string_view::npos) end = no_proxy.size();
    auto entry = lower(no_proxy.substr(i, end - i));
    i = end + 1;
    if (entry.empty()) continue;
    if (entry == "*") return true;
    if (auto colon = entry.rfind(':'); colon != std::string::npos && entry.find(':') == colon) entry.resize(colon);
    if (!entry.empty() && entry.front() == '.') entry.erase(0, 1);
    if (entry.size() >= 2 && entry.front() == '[' && entry.back() == ']') entry = entry.substr(1, entry.size() - 2);
    if (host == entry) return true;
    if (host.size() > entry.size() && host.ends_with(entry) && host[host.size() - entry.size() - 1] == '.') return true;
  }
  return false;
}

}  // namespace chat::http_client
