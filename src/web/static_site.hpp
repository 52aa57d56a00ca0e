#pragma once
// Answers GET and HEAD for the chat page's files: content type, ETag and
// If-None-Match (304), Cache-Control (hashed names for a year, the page
// itself revalidated), gzip when the client takes it, and the security
// headers that keep the page's script the only one that runs.

#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "http/responses.hpp"
#include "web/embedded_assets.hpp"

namespace chat::web {

// The page runs only its own script and styles, connects only to its own
// origin, is framed by nobody, and assigns HTML only through DOMPurify's
// Trusted Types policy (web/src/markdown.js).
inline constexpr std::string_view kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types dompurify";

class StaticSite {
 public:
  explicit StaticSite(std::span<const EmbeddedAsset> assets);

  bool empty() const { return assets_.empty(); }
  bool has(std::string_view path) const { return assets_.contains(path); }

  // nullopt: not a file of the site, or not GET/HEAD.
  std::optional<http::Response> answer(const http::Request& request, std::string_view path) const;

 private:
  struct Entry {
    const EmbeddedAsset* asset;
    std::string gzip_etag;
  };
  std::map<std::string_view, Entry, std::less<>> assets_;
};

// True when the client can take gzip (RFC 9110 12.5.3: a token with q=0 refuses it).
bool accepts_gzip(std::string_view accept_encoding);

// True when an If-None-Match list names `etag` (weak comparison) or is "*".
bool etag_matches(std::string_view if_none_match, std::string_view etag);

}  // namespace chat::web
