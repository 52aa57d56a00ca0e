#include "auth/random_id.hpp"

#include "auth/base64url.hpp"

#include <openssl/rand.h>

#include <stdexcept>

namespace chat::auth {

std::string unguessable_id(std::string_view prefix) {
  static constexpr std::size_t kCharacters = 21;  // of the 22 that 16 bytes make: 126 of their 128 bits
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no random bytes available");
  auto text = base64url_encode(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
  text.resize(kCharacters);
  return std::string(prefix) + text;
}

}  // namespace chat::auth
