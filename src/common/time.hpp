#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chat {

using SystemTime = std::chrono::system_clock::time_point;
using SteadyTime = std::chrono::steady_clock::time_point;

// RFC 3339 in UTC with microseconds: "2026-11-26T12:00:00.123456Z". The
// microseconds let a client measure chunk latency from the chunk's timestamp.
std::string to_rfc3339(SystemTime t);
inline std::string rfc3339_now() { return to_rfc3339(std::chrono::system_clock::now()); }

// Parses the subset of RFC 3339 that producers emit (UTC "Z" or a numeric offset,
// optional fraction). nullopt when the text is not such a timestamp.
std::optional<SystemTime> parse_rfc3339(std::string_view text);

std::int64_t unix_seconds(SystemTime t);
inline std::int64_t unix_now() { return unix_seconds(std::chrono::system_clock::now()); }

}  // namespace chat
