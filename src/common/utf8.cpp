#include "common/utf8.hpp"

#include <utility>

namespace chat {
namespace {

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// The code point starting at text[i], and its length in bytes. A malformed
// sequence reads as U+FFFD (not blank), one byte long.
std::pair<char32_t, std::size_t> decode_at(std::string_view text, std::size_t i) noexcept {
  auto c = static_cast<unsigned char>(text[i]);
  std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > text.size()) return {0xFFFD, 1};
  if (len == 1) return {c, 1};
  char32_t cp = c & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(text[i + k]);
    if (!is_continuation(cc)) return {0xFFFD, 1};
    cp = (cp << 6) | (cc & 0x3F);
  }
  return {cp, len};
}

bool shows_nothing(char32_t cp) noexcept {
  switch (cp) {
    case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000: case 0x200B: case 0x200C: case 0x200D: case 0x2060: case 0xFEFF:
      return true;
    default:
      return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x2000 && cp <= 0x200A);
  }
}

}  // namespace

std::size_t utf8_length(std::string_view text) noexcept {
  std::size_t n = 0;
  for (unsigned char c : text) n += is_continuation(c) ? 0 : 1;
  return n;
}

std::string_view utf8_prefix(std::string_view text, std::size_t chars) noexcept {
  std::size_t seen = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (is_continuation(static_cast<unsigned char>(text[i]))) continue;
    if (seen == chars) return text.substr(0, i);
    ++seen;
  }
  return text;
}

std::string_view utf8_byte_prefix(std::string_view text, std::size_t max_bytes) noexcept {
  if (text.size() <= max_bytes) return text;
  auto end = max_bytes;
  while (end > 0 && is_continuation(static_cast<unsigned char>(text[end]))) --end;
  return text.substr(0, end);
}

bool utf8_is_blank(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size();) {
    auto [cp, len] = decode_at(text, i);
    if (!shows_nothing(cp)) return false;
    i += len;
  }
  return true;
}

}  // namespace chat
