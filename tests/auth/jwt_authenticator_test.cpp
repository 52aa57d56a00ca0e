#include "auth/jwt_authenticator.hpp"

#include <gtest/gtest.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <unistd.h>

#include "auth/base64url.hpp"

namespace chat::auth {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

constexpr std::int64_t kNow = 1'800'000'000;
const std::string kSecret = "an HS256 secret of at least thirty-two bytes";

// A key pair made for the test with OpenSSL, and what a token issuer does with it.
struct KeyPair {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{nullptr, EVP_PKEY_free};

  static KeyPair rsa(unsigned bits = 2048) { return {{EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{bits}), EVP_PKEY_free}}; }
  static KeyPair ec() { return {{EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free}}; }
  bool is_ec() const { return EVP_PKEY_is_a(key.get(), "EC"); }

  std::string public_pem() const {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_PUBKEY(bio.get(), key.get());
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
  }

  json::object jwk(std::string kid) const {
    json::object out{{"kid", kid}, {"use", "sig"}};
    if (is_ec()) {
      unsigned char point[65];
      std::size_t n = 0;
      EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &n);
      out["kty"] = "EC";
      out["crv"] = "P-256";
      out["x"] = base64url_encode(std::string_view(reinterpret_cast<char*>(point) + 1, 32));
      out["y"] = base64url_encode(std::string_view(reinterpret_cast<char*>(point) + 33, 32));
    } else {
      out["kty"] = "RSA";
      out["alg"] = "RS256";
      for (auto [name, param] : {std::pair{"n", OSSL_PKEY_PARAM_RSA_N}, std::pair{"e", OSSL_PKEY_PARAM_RSA_E}}) {
        BIGNUM* bn = nullptr;
        EVP_PKEY_get_bn_param(key.get(), param, &bn);
        std::string bytes(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
        BN_bn2bin(bn, reinterpret_cast<unsigned char*>(bytes.data()));
        BN_free(bn);
        out[name] = base64url_encode(bytes);
      }
    }
    return out;
  }

  // The JWS signature: PKCS#1 v1.5 for RSA, raw r||s for EC.
  std::string sign(std::string_view input) const {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get());
    std::size_t n = 0;
    auto* in = reinterpret_cast<const unsigned char*>(input.data());
    EVP_DigestSign(ctx.get(), nullptr, &n, in, input.size());
    std::string sig(n, '\0');
    EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &n, in, input.size());
    sig.resize(n);
    if (!is_ec()) return sig;
    auto* der = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* parsed = d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(sig.size()));
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(parsed), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(parsed), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(parsed);
    return raw;
  }
};

std::string hmac(std::string_view secret, std::string_view input) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), mac, &n);
  return std::string(reinterpret_cast<char*>(mac), n);
}

json::object claims(std::string sub = "alice") { return {{"sub", sub}, {"exp", kNow + 600}, {"iat", kNow}}; }

std::string signing_input(const json::object& header, const json::object& payload) {
  return base64url_encode(json::serialize(header)) + "." + base64url_encode(json::serialize(payload));
}
std::string hs256(const json::object& payload, std::string_view secret = kSecret) {
  auto input = signing_input({{"alg", "HS256"}, {"typ", "JWT"}}, payload);
  return input + "." + base64url_encode(hmac(secret, input));
}
std::string signed_by(const KeyPair& k, const json::object& payload, std::string kid = {}) {
  json::object header{{"alg", k.is_ec() ? "ES256" : "RS256"}, {"typ", "JWT"}};
  if (!kid.empty()) header["kid"] = kid;
  auto input = signing_input(header, payload);
  return input + "." + base64url_encode(k.sign(input));
}

struct JwtTest : ::testing::Test {
  std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("auth-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  ~JwtTest() override { std::filesystem::remove_all(dir); }

  std::string write(const std::string& name, const std::string& text) {
    auto path = dir / name;
    std::ofstream(path) << text;
    return path.string();
  }
  JwtOptions options() {
    JwtOptions o;
    o.now = [] { return kNow; };
    return o;
  }
  static boost::system::error_code refusal(const Authenticator& a, const std::string& token) { return a.verify(token).error; }
};

TEST_F(JwtTest, AcceptsHs256AndReturnsTheSubject) {
  auto o = options();
  o.secret = kSecret;
  JwtAuthenticator auth(o);
  auto verdict = auth.verify(hs256(claims("alice")));
  EXPECT_FALSE(verdict.error) << verdict.error.message();
  EXPECT_EQ(verdict.user_id, "alice");
  EXPECT_EQ(refusal(auth, hs256(claims(), "another secret of thirty-two bytes or so")), Errc::bad_signature);
}

TEST_F(JwtTest, AcceptsRs256AndEs256FromPemFiles) {
  for (bool ec : {false, true}) {
    auto key = ec ? KeyPair::ec() : KeyPair::rsa();
    auto o = options();
    o.public_key_file = write("key.pem", key.public_pem());
    JwtAuthenticator auth(o);
    auto verdict = auth.verify(signed_by(key, claims("bob")));
    EXPECT_FALSE(verdict.error) << verdict.error.message();
    EXPECT_EQ(verdict.user_id, "bob");
    // Another key of the same kind: the signature fails.
    auto other = key.is_ec() ? KeyPair::ec() : KeyPair::rsa();
    EXPECT_EQ(refusal(auth, signed_by(other, claims())), Errc::bad_signature);
    // HS256 was not configured.
    EXPECT_EQ(refusal(auth, hs256(claims())), Errc::algorithm_refused);
  }
}

TEST_F(JwtTest, RefusesATamperedPayload) {
  auto key = KeyPair::rsa();
  auto o = options();
  o.public_key_file = write("key.pem", key.public_pem());
  JwtAuthenticator auth(o);
  auto token = signed_by(key, claims("alice"));
  auto dot1 = token.find('.'), dot2 = token.rfind('.');
  auto forged = token.substr(0, dot1 + 1) + base64url_encode(json::serialize(claims("mallory"))) + token.substr(dot2);
  EXPECT_EQ(refusal(auth, forged), Errc::bad_signature);
}

TEST_F(JwtTest, ChecksExpiryAndNotBeforeWithLeeway) {
  auto o = options();
  o.secret = kSecret;
  o.leeway = 30s;
  JwtAuthenticator auth(o);
  auto c = claims();
  c["exp"] = kNow - 20;  // within the leeway
  EXPECT_FALSE(refusal(auth, hs256(c)));
  c["exp"] = kNow - 31;
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::expired);
  c.erase("exp");
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::expired);  // exp is required
  c["exp"] = "tomorrow";
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::malformed);
  c = claims();
  c["nbf"] = kNow + 20;
  EXPECT_FALSE(refusal(auth, hs256(c)));
  c["nbf"] = kNow + 31;
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::not_yet_valid);
}

TEST_F(JwtTest, ChecksIssuerAndAudienceWhenConfigured) {
  auto o = options();
  o.secret = kSecret;
  EXPECT_FALSE(refusal(JwtAuthenticator(o), hs256(claims())));  // neither configured: neither needed
  o.issuer = "https://idp.example";
  o.audience = "chatd";
  JwtAuthenticator auth(o);
  auto c = claims();
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::wrong_issuer);
  c["iss"] = "https://evil.example";
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::wrong_issuer);
  c["iss"] = "https://idp.example";
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::wrong_audience);
  c["aud"] = "another-service";
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::wrong_audience);
  c["aud"] = "chatd";
  EXPECT_FALSE(refusal(auth, hs256(c)));
  c["aud"] = json::array{"another-service", "chatd"};
  EXPECT_FALSE(refusal(auth, hs256(c)));
}

TEST_F(JwtTest, RefusesAlgNone) {
  auto o = options();
  o.secret = kSecret;
  JwtAuthenticator auth(o);
  for (auto alg : {"none", "None", "NONE", "HS512", ""}) {
    auto input = signing_input({{"alg", alg}}, claims());
    EXPECT_EQ(refusal(auth, input + "."), Errc::algorithm_refused) << alg;
    EXPECT_EQ(refusal(auth, input + "." + base64url_encode(hmac(kSecret, input))), Errc::algorithm_refused) << alg;
  }
  EXPECT_EQ(refusal(auth, signing_input({{"typ", "JWT"}}, claims()) + "."), Errc::malformed);  // no alg at all
}

// RFC 7515 §4.1.11: an extension named critical must be understood, and none is.
TEST_F(JwtTest, RefusesCriticalExtensionsItDoesNotImplement) {
  auto o = options();
  o.secret = kSecret;
  JwtAuthenticator auth(o);
  auto input = signing_input({{"alg", "HS256"}, {"crit", json::array{"exp"}}}, claims());
  EXPECT_EQ(refusal(auth, input + "." + base64url_encode(hmac(kSecret, input))), Errc::critical_extension);
}

TEST_F(JwtTest, RefusesHs256SignedWithThePublicKey) {
  // Alg confusion: the attacker knows the public key and signs HS256 with its
  // bytes, hoping the verifier uses "the key" for whatever alg the token says.
  auto key = KeyPair::rsa();
  auto pem = key.public_pem();
  auto o = options();
  o.public_key_file = write("key.pem", pem);
  EXPECT_EQ(refusal(JwtAuthenticator(o), hs256(claims(), pem)), Errc::algorithm_refused);
  // Even when HS256 is also configured, only the secret verifies it.
  o.secret = kSecret;
  EXPECT_EQ(refusal(JwtAuthenticator(o), hs256(claims(), pem)), Errc::bad_signature);
  // And an RS256 header cannot get an EC key or the other way round.
  auto ec = KeyPair::ec();
  o.public_key_file = write("ec.pem", ec.public_pem());
  EXPECT_EQ(refusal(JwtAuthenticator(o), signed_by(key, claims())), Errc::algorithm_refused);
}

TEST_F(JwtTest, RefusesMalformedTokensAndSubjects) {
  auto o = options();
  o.secret = kSecret;
  JwtAuthenticator auth(o);
  EXPECT_EQ(refusal(auth, ""), Errc::missing_token);
  for (auto bad : {"abc", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.", "W10.e30."})
    EXPECT_EQ(refusal(auth, bad), Errc::malformed) << bad;
  EXPECT_EQ(refusal(auth, std::string(9000, 'a')), Errc::malformed);
  for (auto sub : {"", "has space", "x/y"}) EXPECT_EQ(refusal(auth, hs256(claims(sub))), Errc::bad_subject) << sub;
  auto c = claims();
  c.erase("sub");
  EXPECT_EQ(refusal(auth, hs256(c)), Errc::bad_subject);
}

TEST_F(JwtTest, JwksChoosesByKidAndFollowsRotation) {
  auto k1 = KeyPair::rsa(), k2 = KeyPair::ec();
  auto path = write("jwks.json", json::serialize(json::object{{"keys", json::array{k1.jwk("k1")}}}));
  auto o = options();
  o.jwks_file = path;
  JwtAuthenticator auth(o);
  EXPECT_FALSE(refusal(auth, signed_by(k1, claims(), "k1")));
  EXPECT_EQ(refusal(auth, signed_by(k2, claims(), "k2")), Errc::unknown_key);
  EXPECT_EQ(refusal(auth, signed_by(k2, claims(), "k1")), Errc::algorithm_refused);  // ES256 under an RSA kid

  // Rotation: k2 comes in, k1 goes. The new file gets a later mtime, as a
  // rewrite one second later would.
  auto before = std::filesystem::last_write_time(path);
  write("jwks.json", json::serialize(json::object{{"keys", json::array{k2.jwk("k2")}}}));
  std::filesystem::last_write_time(path, before + 1s);
  EXPECT_FALSE(refusal(auth, signed_by(k2, claims(), "k2")));
  EXPECT_EQ(refusal(auth, signed_by(k1, claims(), "k1")), Errc::unknown_key);

  // A broken rewrite keeps the keys read before; the next good one is read.
  write("jwks.json", "{\"keys\":");
  std::filesystem::last_write_time(path, before + 2s);
  EXPECT_FALSE(refusal(auth, signed_by(k2, claims(), "k2")));
  EXPECT_FALSE(refusal(auth, signed_by(k2, claims(), "k2")));
  write("jwks.json", json::serialize(json::object{{"keys", json::array{k1.jwk("k1")}}}));
  std::filesystem::last_write_time(path, before + 3s);
  EXPECT_FALSE(refusal(auth, signed_by(k1, claims(), "k1")));
  EXPECT_EQ(refusal(auth, signed_by(k2, claims(), "k2")), Errc::unknown_key);
}

TEST_F(JwtTest, EcCoordinatesWrittenWithoutTheirLeadingZerosAreAccepted) {
  // PyJWT before 2.8 (Debian 12 has 2.6) writes a coordinate as the shortest
  // big-endian number: about one EC key in 128 then has one of 31 bytes.
  auto k = KeyPair::ec();
  for (int i = 0; i < 10'000 && base64url_decode(std::string(k.jwk("k")["x"].as_string())).value()[0] != '\0'; ++i)
    k = KeyPair::ec();
  auto jwk = k.jwk("k");
  auto x = base64url_decode(std::string(jwk["x"].as_string())).value();
  ASSERT_EQ(x[0], '\0') << "no key with a leading zero in 10,000";
  jwk["x"] = base64url_encode(x.substr(x.find_first_not_of('\0')));
  auto o = options();
  o.jwks_file = write("short.json", json::serialize(json::object{{"keys", json::array{jwk}}}));
  JwtAuthenticator auth(o);
  EXPECT_FALSE(refusal(auth, signed_by(k, claims(), "k")));
}

TEST_F(JwtTest, RefusesUnusableConfigurations) {
  auto o = options();
  EXPECT_THROW(JwtAuthenticator{o}, std::invalid_argument);  // no key at all
  o.public_key_file = (dir / "missing.pem").string();
  EXPECT_THROW(JwtAuthenticator{o}, std::invalid_argument);
  o.public_key_file = write("small.pem", KeyPair::rsa(1024).public_pem());
  EXPECT_THROW(JwtAuthenticator{o}, std::invalid_argument);
  o.public_key_file.clear();
  o.jwks_file = write("empty.json", R"({"keys":[]})");
  EXPECT_THROW(JwtAuthenticator{o}, std::invalid_argument);
}

}  // namespace
}  // namespace chat::auth
