#include "auth/jwt_keys.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <boost/json/parse.hpp>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "auth/base64url.hpp"
#include "log/log.hpp"

namespace chat::auth {
namespace {

// One RAII wrapper per OpenSSL handle kind.
template <class T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Bignum = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ParamBuilder = std::unique_ptr<OSSL_PARAM_BLD, Deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>>;
using Params = std::unique_ptr<OSSL_PARAM, Deleter<OSSL_PARAM, OSSL_PARAM_free>>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, Deleter<ECDSA_SIG, ECDSA_SIG_free>>;

const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

Bignum bignum(std::string_view big_endian) {
  return Bignum(BN_bin2bn(bytes(big_endian), static_cast<int>(big_endian.size()), nullptr));
}

std::string jwk_bytes(const boost::json::object& jwk, std::string_view field) {
  auto* v = jwk.if_contains(field);
  if (!v || !v->is_string()) throw std::invalid_argument("JWK without \"" + std::string(field) + "\"");
  auto decoded = base64url_decode(v->get_string());
  if (!decoded || decoded->empty()) throw std::invalid_argument("JWK \"" + std::string(field) + "\" is not base64url");
  return *decoded;
}

std::string jwk_text(const boost::json::object& jwk, std::string_view field) {
  auto* v = jwk.if_contains(field);
  return v && v->is_string() ? std::string(v->get_string()) : std::string{};
}

EVP_PKEY* key_from_params(const char* type, OSSL_PARAM_BLD* builder) {
  Params params(OSSL_PARAM_BLD_to_param(builder));
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
    throw std::invalid_argument(std::string("JWK is not a valid ") + type + " public key");
  return key;
}

}  // namespace

std::optional<Alg> parse_alg(std::string_view name) {
  if (name == "HS256") return Alg::hs256;
  if (name == "RS256") return Alg::rs256;
  if (name == "ES256") return Alg::es256;
  return std::nullopt;
}

std::string_view alg_name(Alg alg) {
  switch (alg) {
    case Alg::hs256: return "HS256";
    case Alg::rs256: return "RS256";
    case Alg::es256: return "ES256";
  }
  return "?";
}

bool verify_hs256(std::string_view secret, std::string_view signing_input, std::string_view signature) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), bytes(signing_input), signing_input.size(),
            mac, &length))
    return false;
  return signature.size() == length && CRYPTO_memcmp(mac, signature.data(), length) == 0;
}

PublicKey::~PublicKey() { EVP_PKEY_free(key_); }

std::shared_ptr<const PublicKey> PublicKey::adopt(EVP_PKEY* key) {
  // Owned from here on, whatever is thrown below.
  std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>> owned(key);
  if (EVP_PKEY_is_a(key, "RSA")) {
    if (EVP_PKEY_get_bits(key) < 2048) throw std::invalid_argument("RSA keys must have at least 2048 bits");
    return std::shared_ptr<const PublicKey>(new PublicKey(owned.release(), Alg::rs256));
  }
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &length) != 1 ||
        std::string_view(group, length) != "prime256v1")
      throw std::invalid_argument("EC keys must be on the P-256 curve (ES256)");
    return std::shared_ptr<const PublicKey>(new PublicKey(owned.release(), Alg::es256));
  }
  throw std::invalid_argument("only RSA and EC P-256 public keys are supported");
}

std::shared_ptr<const PublicKey> PublicKey::from_pem(std::string_view pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* key = bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (!key) throw std::invalid_argument("not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  return adopt(key);
}

std::shared_ptr<const PublicKey> PublicKey::from_jwk(const boost::json::object& jwk) {
  auto kty = jwk_text(jwk, "kty");
  auto use = jwk_text(jwk, "use");
  if (!use.empty() && use != "sig") throw std::invalid_argument("JWK \"use\" is not \"sig\"");
  ParamBuilder builder(OSSL_PARAM_BLD_new());
  if (!builder) throw std::bad_alloc();
  std::shared_ptr<const PublicKey> key;
  if (kty == "RSA") {
    auto n = bignum(jwk_bytes(jwk, "n"));
    auto e = bignum(jwk_bytes(jwk, "e"));
    if (!n || !e || OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(builder.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1)
      throw std::invalid_argument("JWK is not a valid RSA public key");
    key = adopt(key_from_params("RSA", builder.get()));
  } else if (kty == "EC") {
    if (jwk_text(jwk, "crv") != "P-256") throw std::invalid_argument("EC JWK must be on the P-256 curve");
    // RFC 7518 wants 32 bytes each; some issuers (PyJWT before 2.8) drop a
    // coordinate's leading zero bytes, which leaves the number the same.
    auto x = jwk_bytes(jwk, "x");
    auto y = jwk_bytes(jwk, "y");
    if (x.size() > 32 || y.size() > 32) throw std::invalid_argument("EC JWK coordinates must be at most 32 bytes");
    x.insert(0, 32 - x.size(), '\0');
    y.insert(0, 32 - y.size(), '\0');
    std::string point = "\x04" + x + y;  // uncompressed point
    if (OSSL_PARAM_BLD_push_utf8_string(builder.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(builder.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1)
      throw std::invalid_argument("JWK is not a valid EC public key");
    key = adopt(key_from_params("EC", builder.get()));
  } else {
    throw std::invalid_argument("JWK kty must be RSA or EC");
  }
  auto alg = jwk_text(jwk, "alg");
  if (!alg.empty() && parse_alg(alg) != key->alg())
    throw std::invalid_argument("JWK alg \"" + alg + "\" does not fit its key type");
  return key;
}

bool PublicKey::verify(std::string_view signing_input, std::string_view signature) const {
  std::string der;
  if (alg_ == Alg::es256) {
    // JWS carries r||s (RFC 7518 §3.4); OpenSSL wants DER.
    if (signature.size() != 64) return false;
    EcdsaSig sig(ECDSA_SIG_new());
    auto r = bignum(signature.substr(0, 32));
    auto s = bignum(signature.substr(32));
    if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) return false;
    (void)r.release();  // now owned by sig
    (void)s.release();
    int length = i2d_ECDSA_SIG(sig.get(), nullptr);
    if (length <= 0) return false;
    der.resize(static_cast<std::size_t>(length));
    auto* out = reinterpret_cast<unsigned char*>(der.data());
    if (i2d_ECDSA_SIG(sig.get(), &out) != length) return false;
    signature = der;
  }
  MdCtx ctx(EVP_MD_CTX_new());
  return ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_) == 1 &&
         EVP_DigestVerify(ctx.get(), bytes(signature), signature.size(), bytes(signing_input), signing_input.size()) == 1;
}

JwksFile::JwksFile(std::filesystem::path path) : path_(std::move(path)) {
  std::error_code ec;
  stamp_ = {std::filesystem::last_write_time(path_, ec), std::filesystem::file_size(path_, ec)};
  std::ifstream in(path_);
  std::stringstream text;
  text << in.rdbuf();
  if (ec || !in) throw std::invalid_argument("cannot read " + path_.string());
  keys_ = std::make_shared<const Keys>(parse(text.str()));
}

JwksFile::Keys JwksFile::parse(const std::string& text) {
  boost::system::error_code ec;
  auto doc = boost::json::parse(text, ec);
  const boost::json::value* list = !ec && doc.is_object() ? doc.get_object().if_contains("keys") : nullptr;
  if (!list || !list->is_array()) throw std::invalid_argument("not a JWKS document ({\"keys\":[...]})");
  Keys keys;
  for (const auto& jwk : list->get_array()) {
    if (!jwk.is_object()) throw std::invalid_argument("a JWKS key is not an object");
    // Keys for encryption or other algorithms may share the set: skip them, use the rest.
    try {
      keys.insert_or_assign(jwk_text(jwk.get_object(), "kid"), PublicKey::from_jwk(jwk.get_object()));
    } catch (const std::invalid_argument& e) {
      log::warn("jwks_key_skipped", {{"kid", jwk_text(jwk.get_object(), "kid")}, {"reason", e.what()}});
    }
  }
  if (keys.empty()) throw std::invalid_argument("the JWKS holds no RS256 or ES256 key");
  return keys;
}

std::shared_ptr<const JwksFile::Keys> JwksFile::current() const {
  std::error_code ec;
  Stamp now{std::filesystem::last_write_time(path_, ec), 0};
  if (!ec) now.size = std::filesystem::file_size(path_, ec);
  std::lock_guard lock(mutex_);
  if (ec || now == stamp_ || now == failed_) return keys_;
  std::ifstream in(path_);
  std::stringstream text;
  text << in.rdbuf();
  try {
    if (!in) throw std::invalid_argument("cannot read the file");
    keys_ = std::make_shared<const Keys>(parse(text.str()));
    stamp_ = now;
    log::info("jwks_reloaded", {{"path", path_.string()}, {"keys", keys_->size()}});
  } catch (const std::invalid_argument& e) {
    // Probably caught half-written: the next change of the file is read again.
    failed_ = now;
    log::warn("jwks_reload_failed", {{"path", path_.string()}, {"reason", e.what()}});
  }
  return keys_;
}

std::shared_ptr<const PublicKey> JwksFile::find(std::string_view kid) const {
  auto keys = current();
  auto it = keys->find(kid);
  return it == keys->end() ? nullptr : it->second;
}

}  // namespace chat::auth
