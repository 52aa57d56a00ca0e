#include "api/credentials.hpp"

namespace bhttp = boost::beast::http;

namespace chat::api {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if ((a[i] | 0x20) != (b[i] | 0x20)) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<std::string_view> cookie(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    auto semi = header.find(';');
    auto pair = trim(header.substr(0, semi));
    auto eq = pair.find('=');
    if (eq != pair.npos && trim(pair.substr(0, eq)) == name) return trim(pair.substr(eq + 1));
    header = semi == header.npos ? std::string_view{} : header.substr(semi + 1);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string_view> bearer_token(const http::Request& request, const Query& query, bool event_stream) {
  auto it = request.find(bhttp::field::authorization);
  // Two credentials are none: a proxy reading the other line would act for
  // another user than this server does.
  if (request.count(bhttp::field::authorization) > 1) return std::string_view{};
  if (it != request.end()) {
    // RFC 6750 §2.1: the scheme is case-insensitive.
    std::string_view value = trim(it->value());
    constexpr std::string_view kScheme = "Bearer ";
    if (value.size() <= kScheme.size() || !iequals(value.substr(0, kScheme.size()), kScheme)) return std::string_view{};
    return trim(value.substr(kScheme.size()));
  }
  if (!event_stream) return std::nullopt;
  if (auto q = query.find("access_token"); q != query.end()) return std::string_view(q->second);
  if (auto c = request.find(bhttp::field::cookie); c != request.end()) return cookie(c->value(), "chat_token");
  return std::nullopt;
}

}  // namespace chat::api
