#include "web/static_site.hpp"

#include <algorithm>
#include <cctype>

namespace bhttp = boost::beast::http;

namespace chat::web {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Calls f(item) for each comma-separated item, trimmed, skipping empty ones.
template <class F>
void for_each_item(std::string_view list, F f) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = trim(list.substr(0, comma));
    if (!item.empty()) f(item);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
}

// "q=0", "q=0.0", "q=0.000": the coding is refused.
bool has_zero_quality(std::string_view params) {
  while (!params.empty()) {
    auto semi = params.find(';');
    auto param = trim(params.substr(0, semi));
    params = semi == std::string_view::npos ? std::string_view{} : params.substr(semi + 1);
    if (param.size() < 2 || !iequals(param.substr(0, 2), "q=")) continue;
    auto value = trim(param.substr(2));
    return !value.empty() && value.find_first_not_of("0.") == std::string_view::npos;
  }
  return false;
}

void set_security_headers(http::Response& res) {
  res.set("Content-Security-Policy", kContentSecurityPolicy);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  res.set(bhttp::field::x_frame_options, "DENY");
  res.set("Cross-Origin-Opener-Policy", "same-origin");
}

}  // namespace

bool accepts_gzip(std::string_view accept_encoding) {
  std::optional<bool> gzip, any;
  for_each_item(accept_encoding, [&](std::string_view item) {
    auto semi = item.find(';');
    auto coding = trim(item.substr(0, semi));
    bool refused = semi != std::string_view::npos && has_zero_quality(item.substr(semi + 1));
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) gzip = !refused;
    else if (coding == "*") any = !refused;
  });
  return gzip.value_or(any.value_or(false));
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  bool match = false;
  for_each_item(if_none_match, [&](std::string_view tag) {
    if (tag == "*") match = true;
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == etag) match = true;
  });
  return match;
}

StaticSite::StaticSite(std::span<const EmbeddedAsset> assets) {
  for (const auto& asset : assets) {
    Entry entry{&asset, {}};
    // A compressed copy is another representation: a strong ETag of its own.
    if (!asset.gzip.empty() && asset.etag.size() >= 2)
      entry.gzip_etag = std::string(asset.etag.substr(0, asset.etag.size() - 1)) + "-gzip\"";
    assets_.emplace(asset.path, std::move(entry));
  }
}

std::optional<http::Response> StaticSite::answer(const http::Request& request, std::string_view path) const {
  if (request.method() != bhttp::verb::get && request.method() != bhttp::verb::head) return std::nullopt;
  auto it = assets_.find(path);
  if (it == assets_.end()) return std::nullopt;
  const EmbeddedAsset& asset = *it->second.asset;
  const std::string& gzip_etag = it->second.gzip_etag;
  const bool has_gzip = !asset.gzip.empty();
  const bool gzip = has_gzip && accepts_gzip(request[bhttp::field::accept_encoding]);
  const std::string_view etag = gzip ? std::string_view(gzip_etag) : asset.etag;

  auto if_none_match = request[bhttp::field::if_none_match];
  const bool unchanged = !if_none_match.empty() && (etag_matches(if_none_match, asset.etag) ||
                                                    (has_gzip && etag_matches(if_none_match, gzip_etag)));
  http::Response res{unchanged ? http::Status::not_modified : http::Status::ok, request.version()};
  res.set(bhttp::field::etag, etag);
  res.set(bhttp::field::cache_control, asset.immutable ? "public, max-age=31536000, immutable" : "no-cache");
  if (has_gzip) res.set(bhttp::field::vary, "Accept-Encoding");
  set_security_headers(res);
  if (unchanged) return res;
  res.set(bhttp::field::content_type, asset.content_type);
  const auto& bytes = gzip ? asset.gzip : asset.body;
  if (gzip) res.set(bhttp::field::content_encoding, "gzip");
  res.body().assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return res;
}

}  // namespace chat::web
