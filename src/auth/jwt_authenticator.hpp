#pragma once
// AUTH_MODE=jwt: a bearer token is a JWS signed with HS256 (AUTH_JWT_SECRET),
// RS256 or ES256 (AUTH_JWT_PUBLIC_KEY_FILE, AUTH_JWKS_FILE). Accepted when its
// header names an algorithm a configured key is for, the signature checks, exp
// has not passed, nbf has, and iss/aud match when configured. The user is `sub`.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "auth/authenticator.hpp"
#include "auth/jwt_keys.hpp"

namespace chat::auth {

struct JwtOptions {
  std::string secret;            // HS256; empty: no HS256
  std::string public_key_file;   // PEM; empty: none
  std::string jwks_file;         // JWKS; empty: none
  std::string issuer;            // empty: iss not checked
  std::string audience;          // empty: aud not checked
  std::chrono::seconds leeway{30};
  std::function<std::int64_t()> now{};  // seconds since the epoch; empty: the system clock
};

class JwtAuthenticator final : public Authenticator {
 public:
  // Throws std::invalid_argument when no key is configured or a key is unusable.
  explicit JwtAuthenticator(JwtOptions options);
  Verdict verify(std::string_view token) const override;

 private:
  boost::system::error_code check_signature(const boost::json::object& header, std::string_view signing_input,
                                            std::string_view signature) const;
  boost::system::error_code check_claims(const boost::json::object& claims) const;

  JwtOptions options_;
  std::shared_ptr<const PublicKey> public_key_;
  std::unique_ptr<JwksFile> jwks_;
};

}  // namespace chat::auth
