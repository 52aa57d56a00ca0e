#pragma once
// The Authenticator AUTH_MODE asks for: null for none, a JwtAuthenticator for jwt.

#include <memory>
#include <string_view>

#include "auth/authenticator.hpp"
#include "config/config.hpp"

namespace chat::auth {

// Throws config::ConfigError when a configured key cannot be used. With
// AUTH_MODE=none and a listen address that is not loopback it logs one warning:
// anyone who reaches the port can then act as any user.
std::unique_ptr<Authenticator> make_authenticator(const config::AuthConfig& config, std::string_view listen_host);

}  // namespace chat::auth
