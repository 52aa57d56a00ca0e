#include "auth/jwt_authenticator.hpp"

#include <boost/json/parse.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "auth/base64url.hpp"
#include "common/identifier.hpp"

namespace chat::auth {
namespace {

namespace json = boost::json;
using boost::system::error_code;

// Far beyond any real token; bounds the work an attacker can ask for.
constexpr std::size_t kMaxTokenBytes = 8 * 1024;

std::optional<json::object> decode_object(std::string_view part) {
  auto text = base64url_decode(part);
  if (!text) return std::nullopt;
  error_code ec;
  auto value = json::parse(*text, ec);
  if (ec || !value.is_object()) return std::nullopt;
  return std::move(value.get_object());
}

// A NumericDate (RFC 7519 §2): seconds, possibly fractional.
std::optional<double> numeric_date(const json::object& claims, std::string_view name, bool& malformed) {
  auto* v = claims.if_contains(name);
  if (!v) return std::nullopt;
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  if (v->is_double() && std::isfinite(v->get_double())) return v->get_double();
  malformed = true;
  return std::nullopt;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw std::invalid_argument("cannot read " + path);
  return text.str();
}

}  // namespace

JwtAuthenticator::JwtAuthenticator(JwtOptions options) : options_(std::move(options)) {
  if (options_.secret.empty() && options_.public_key_file.empty() && options_.jwks_file.empty())
    throw std::invalid_argument("no key: set AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE");
  if (!options_.public_key_file.empty()) {
    try {
      public_key_ = PublicKey::from_pem(read_file(options_.public_key_file));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(options_.public_key_file + ": " + e.what());
    }
  }
  if (!options_.jwks_file.empty()) {
    try {
      jwks_ = std::make_unique<JwksFile>(options_.jwks_file);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(options_.jwks_file + ": " + e.what());
    }
  }
  if (!options_.now)
    options_.now = [] {
      return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    };
}

Verdict JwtAuthenticator::verify(std::string_view token) const {
  if (token.empty()) return {Errc::missing_token, {}};
  if (token.size() > kMaxTokenBytes) return {Errc::malformed, {}};
  auto dot1 = token.find('.');
  auto dot2 = dot1 == token.npos ? token.npos : token.find('.', dot1 + 1);
  if (dot2 == token.npos || token.find('.', dot2 + 1) != token.npos) return {Errc::malformed, {}};
  auto header = decode_object(token.substr(0, dot1));
  auto claims = decode_object(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = base64url_decode(token.substr(dot2 + 1));
  if (!header || !claims || !signature) return {Errc::malformed, {}};
  // The signature first: nothing a token claims counts before it is proven.
  if (auto ec = check_signature(*header, token.substr(0, dot2), *signature)) return {ec, {}};
  if (auto ec = check_claims(*claims)) return {ec, {}};
  return {{}, std::string(claims->at("sub").get_string())};
}

error_code JwtAuthenticator::check_signature(const json::object& header, std::string_view signing_input,
                                             std::string_view signature) const {
  auto* alg_field = header.if_contains("alg");
  if (!alg_field || !alg_field->is_string()) return Errc::malformed;
  // Extensions we do not understand must not be ignored (RFC 7515 §4.1.11).
  if (header.contains("crit")) return Errc::critical_extension;
  auto alg = parse_alg(alg_field->get_string());  // "none" is nullopt
  if (!alg) return Errc::algorithm_refused;
  if (*alg == Alg::hs256) {
    // Only the configured secret, never a public key's bytes (alg confusion).
    if (options_.secret.empty()) return Errc::algorithm_refused;
    return verify_hs256(options_.secret, signing_input, signature) ? error_code{} : Errc::bad_signature;
  }
  std::shared_ptr<const PublicKey> key;
  auto* kid = header.if_contains("kid");
  if (kid && !kid->is_string()) return Errc::malformed;
  if (jwks_) key = jwks_->find(kid ? std::string_view(kid->get_string()) : std::string_view{});
  if (!key && public_key_ && (!kid || !jwks_)) key = public_key_;
  if (!key) return public_key_ || jwks_ ? Errc::unknown_key : Errc::algorithm_refused;
  if (key->alg() != *alg) return Errc::algorithm_refused;
  return key->verify(signing_input, signature) ? error_code{} : Errc::bad_signature;
}

error_code JwtAuthenticator::check_claims(const json::object& claims) const {
  const double now = static_cast<double>(options_.now());
  const double leeway = static_cast<double>(options_.leeway.count());
  bool malformed = false;
  auto exp = numeric_date(claims, "exp", malformed);
  auto nbf = numeric_date(claims, "nbf", malformed);
  if (malformed) return Errc::malformed;
  if (!exp || now > *exp + leeway) return Errc::expired;
  if (nbf && now + leeway < *nbf) return Errc::not_yet_valid;
  if (!options_.issuer.empty()) {
    auto* iss = claims.if_contains("iss");
    if (!iss || !iss->is_string() || iss->get_string() != options_.issuer) return Errc::wrong_issuer;
  }
  if (!options_.audience.empty()) {
    // aud is a string or an array of strings (RFC 7519 §4.1.3).
    auto* aud = claims.if_contains("aud");
    bool ours = false;
    if (aud && aud->is_string()) ours = aud->get_string() == options_.audience;
    if (aud && aud->is_array())
      for (const auto& a : aud->get_array()) ours = ours || (a.is_string() && a.get_string() == options_.audience);
    if (!ours) return Errc::wrong_audience;
  }
  auto* sub = claims.if_contains("sub");
  if (!sub || !sub->is_string() || !is_valid_identifier(sub->get_string())) return Errc::bad_subject;
  return {};
}

}  // namespace chat::auth
