#include "auth/authenticator.hpp"

namespace chat::auth {
namespace {

class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "chat.auth"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::missing_token: return "a bearer token is required";
      case Errc::malformed: return "the token is malformed";
      case Errc::algorithm_refused: return "the token's signing algorithm is not accepted";
      case Errc::critical_extension: return "the token names critical extensions (crit) this server does not support";
      case Errc::unknown_key: return "the token's signing key is unknown";
      case Errc::bad_signature: return "the token's signature is invalid";
      case Errc::expired: return "the token has expired or has no exp";
      case Errc::not_yet_valid: return "the token is not valid yet";
      case Errc::wrong_issuer: return "the token's issuer is not accepted";
      case Errc::wrong_audience: return "the token is not meant for this service";
      case Errc::bad_subject: return "the token's sub is not a valid user id";
    }
    return "authentication failed";
  }
};

}  // namespace

const boost::system::error_category& auth_category() noexcept {
  static const Category category;
  return category;
}

}  // namespace chat::auth
