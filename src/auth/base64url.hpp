#pragma once
// base64url without padding (RFC 7515 §2), the encoding of every JWT part.

#include <optional>
#include <string>
#include <string_view>

namespace chat::auth {

// nullopt for characters outside the alphabet, padding, or an impossible length.
std::optional<std::string> base64url_decode(std::string_view text);
std::string base64url_encode(std::string_view bytes);

}  // namespace chat::auth
