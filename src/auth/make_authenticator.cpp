#include "auth/make_authenticator.hpp"

#include <boost/asio/ip/address.hpp>

#include "auth/jwt_authenticator.hpp"
#include "log/log.hpp"

namespace chat::auth {
namespace {

bool loopback(std::string_view host) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

}  // namespace

std::unique_ptr<Authenticator> make_authenticator(const config::AuthConfig& config, std::string_view listen_host) {
  if (config.mode == config::AuthConfig::Mode::none) {
    if (!loopback(listen_host))
      log::warn("auth_disabled", {{"host", listen_host},
                                  {"detail", "AUTH_MODE=none: clients name themselves with user_id; any client "
                                             "can read and write any user's sessions. Set AUTH_MODE=jwt."}});
    return nullptr;
  }
  JwtOptions options;
  options.secret = config.jwt_secret;
  options.public_key_file = config.public_key_file;
  options.jwks_file = config.jwks_file;
  options.issuer = config.issuer;
  options.audience = config.audience;
  options.leeway = std::chrono::duration_cast<std::chrono::seconds>(config.leeway);
  try {
    auto authenticator = std::make_unique<JwtAuthenticator>(std::move(options));
    // Which keys, never their contents.
    log::info("auth_enabled", {{"mode", "jwt"},
                               {"hs256", !config.jwt_secret.empty()},
                               {"public_key_file", config.public_key_file},
                               {"jwks_file", config.jwks_file},
                               {"issuer", config.issuer},
                               {"audience", config.audience}});
    return authenticator;
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(std::string("AUTH_MODE=jwt: ") + e.what());
  }
}

}  // namespace chat::auth
