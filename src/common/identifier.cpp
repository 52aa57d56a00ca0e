#include "common/identifier.hpp"

#include <algorithm>
#include <array>
#include <random>

namespace chat {

bool is_valid_identifier(std::string_view id) noexcept {
  if (id.empty() || id.size() > kMaxIdentifierLength) return false;
  for (unsigned char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool is_valid_model_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxIdentifierLength) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

namespace {

// One generator per thread: no lock on the request path.
std::mt19937_64& generator() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

}  // namespace

std::string new_identifier(std::string_view prefix) {
  auto& rng = generator();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(prefix);
  id.reserve(prefix.size() + 24);
  for (int word = 0; word < 2; ++word) {
    auto bits = rng();
    for (int i = 0; i < 12; ++i, bits >>= 4) id.push_back(kHex[bits & 0xf]);
  }
  return id;
}

CompactId CompactId::random() { return CompactId(generator()()); }

std::string CompactId::spelled(std::string_view prefix) const {
  static constexpr char kDigits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string id(prefix);
  id.reserve(prefix.size() + 10);
  auto bits = number_;
  for (int i = 0; i < 10; ++i, bits /= 62) id.push_back(kDigits[bits % 62]);
  return id;
}

}  // namespace chat
