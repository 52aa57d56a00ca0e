#pragma once
// Lenient field access for providers' JSON: a missing or mistyped field reads as
// absent, and the caller decides whether that is an error.

#include <boost/json.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

#include "protocol/messages.hpp"

namespace chat::providers {

inline const boost::json::object* object_at(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it == o.end() ? nullptr : it->value().if_object();
}

// Whole numbers only: 1e400 parses as an infinite double and reads as absent,
// like any double; an unsigned value beyond int64 is absent, not wrapped.
inline std::optional<std::int64_t> int_at(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return std::nullopt;
  if (auto* i = it->value().if_int64()) return *i;
  if (auto* u = it->value().if_uint64(); u && *u <= static_cast<std::uint64_t>(INT64_MAX))
    return static_cast<std::int64_t>(*u);
  return std::nullopt;
}

// A token count: a whole number from 0 to 2^53 - 1 (what a browser reads
// exactly, and all a pod accepts in a chunk); anything else reads as absent.
inline std::optional<std::int64_t> count_at(const boost::json::object& o, std::string_view key) {
  auto n = int_at(o, key);
  if (n && (*n < 0 || *n > protocol::kMaxSafeInteger)) return std::nullopt;
  return n;
}

inline std::string_view string_at(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return {};
  if (auto* s = it->value().if_string()) return *s;
  return {};
}

}  // namespace chat::providers
