#pragma once
// A TCP port written in a URL or a setting: 1..65535 in decimal digits, read
// from the text (Boost.URL's port_number() wraps larger values: 80800 reads
// 15264).

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace chat {

inline std::optional<std::uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value < 1 || value > 65535)
    return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

}  // namespace chat
