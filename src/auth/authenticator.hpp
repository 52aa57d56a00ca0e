#pragma once
// Who is calling (docs/SECURITY.md). The HTTP layer hands an Authenticator the
// bearer token a request carried and gets back the user it speaks for, or why
// not. Implementations are immutable after construction apart from their own
// key caches, and verify() may be called from any thread at once.

#include <boost/system/error_code.hpp>

#include <string>
#include <string_view>

namespace chat::auth {

// Why a token was refused. The messages are safe to send to the client: they
// never repeat the token or a key.
enum class Errc {
  missing_token = 1,   // no token at all (401 without error="invalid_token")
  malformed,           // not three base64url parts of JSON, or a claim of the wrong type
  algorithm_refused,   // alg none, or an algorithm no configured key is for
  critical_extension,  // a crit header: extensions this server does not implement
  unknown_key,         // no configured key matches the header (kid)
  bad_signature,
  expired,             // exp is missing or passed (leeway included)
  not_yet_valid,       // nbf is in the future (leeway included)
  wrong_issuer,
  wrong_audience,
  bad_subject,         // sub missing or not a valid user id
};
const boost::system::error_category& auth_category() noexcept;
inline boost::system::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), auth_category()}; }

struct Verdict {
  boost::system::error_code error;  // set: refused
  std::string user_id;              // the token's `sub` when accepted
};

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // Checks a compact JWS (header.payload.signature) and its claims.
  virtual Verdict verify(std::string_view token) const = 0;
};

}  // namespace chat::auth

template <>
struct boost::system::is_error_code_enum<chat::auth::Errc> : std::true_type {};
