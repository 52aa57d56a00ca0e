#pragma once
// The chat page's files as built into chatd: web/build.mjs generates their
// table (web_assets.cpp in the build tree) from web/src.

#include <span>
#include <string_view>

namespace chat::web {

struct EmbeddedAsset {
  std::string_view path;          // as requested: "/", "/assets/app-4F2K.js"
  std::string_view content_type;  // with charset for text
  bool immutable;                 // the name carries the content hash: cache it for good
  std::string_view etag;          // quoted, from the content's SHA-256
  std::span<const unsigned char> body;
  std::span<const unsigned char> gzip;  // empty: compression would not help
};

// Empty when chatd was built without the page (-DCHAT_BUILD_WEB=OFF).
std::span<const EmbeddedAsset> embedded_assets();

}  // namespace chat::web
