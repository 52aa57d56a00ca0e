#pragma once
// The keys JWT signatures are checked with: an HS256 secret, or RS256/ES256
// public keys from a PEM file or a JWKS file (re-read when it changes, so keys
// rotate without a restart). Each key is for exactly one algorithm: a public
// key is never used as an HMAC secret, which is what defeats alg confusion.

#include <boost/json/object.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

typedef struct evp_pkey_st EVP_PKEY;

namespace chat::auth {

enum class Alg { hs256, rs256, es256 };
// nullopt for anything else, "none" included.
std::optional<Alg> parse_alg(std::string_view name);
std::string_view alg_name(Alg alg);

// Constant-time HMAC-SHA256 check of a JWS signature.
bool verify_hs256(std::string_view secret, std::string_view signing_input, std::string_view signature);

// An RSA (2048 bits or more) or EC P-256 public key.
class PublicKey {
 public:
  // Throw std::invalid_argument saying what is wrong with the key.
  static std::shared_ptr<const PublicKey> from_pem(std::string_view pem);
  static std::shared_ptr<const PublicKey> from_jwk(const boost::json::object& jwk);
  ~PublicKey();
  PublicKey(const PublicKey&) = delete;
  PublicKey& operator=(const PublicKey&) = delete;

  Alg alg() const { return alg_; }
  // `signature` as JWS carries it: PKCS#1 v1.5 for RS256, raw r||s for ES256.
  bool verify(std::string_view signing_input, std::string_view signature) const;

 private:
  PublicKey(EVP_PKEY* key, Alg alg) : key_(key), alg_(alg) {}
  static std::shared_ptr<const PublicKey> adopt(EVP_PKEY* key);
  EVP_PKEY* key_;
  Alg alg_;
};

// A JWKS document ({"keys":[...]}) in a file. Keys are found by kid; a key
// without kid serves tokens without one. The file is read again when its
// modification time or size changes; a rewrite that cannot be parsed keeps the
// keys read before (logged once, not read again) until another rewrite.
class JwksFile {
 public:
  // Throws std::invalid_argument when the file cannot be read or holds no usable key.
  explicit JwksFile(std::filesystem::path path);
  std::shared_ptr<const PublicKey> find(std::string_view kid) const;

 private:
  using Keys = std::map<std::string, std::shared_ptr<const PublicKey>, std::less<>>;
  struct Stamp {
    std::filesystem::file_time_type mtime{};
    std::uintmax_t size = 0;
    bool operator==(const Stamp&) const = default;
  };
  static Keys parse(const std::string& text);
  std::shared_ptr<const Keys> current() const;

  std::filesystem::path path_;
  mutable std::mutex mutex_;
  mutable Stamp stamp_;
  mutable Stamp failed_;  // a version of the file that did not parse
  mutable std::shared_ptr<const Keys> keys_;
};

}  // namespace chat::auth
