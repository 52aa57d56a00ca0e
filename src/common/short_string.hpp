#pragma once
// Identifiers kept once per idle stream (a session id in a stream, in a map's
// key, a connection id in a registry entry). An idle stream is mostly such
// fields, and boost's string holds 23 characters inline in 24 bytes where
// std::string holds 15 in 32.

#include <boost/container/string.hpp>

#include <functional>
#include <string_view>

namespace chat {

using ShortString = boost::container::string;

// For maps keyed by ShortString and looked up with any string, without making a
// key. The hash is noexcept, so libstdc++ keeps no copy of it in each node
// (8 bytes): a lookup rehashes the short keys of the bucket it walks instead.
struct StringKeyHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

struct StringKeyEqual {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
};

// The value of `map` (keyed by ShortString, with the two above) under `key`,
// value-initialised if absent: a key is built only when one is added.
template <class Map>
typename Map::mapped_type& find_or_add(Map& map, std::string_view key) {
  auto it = map.find(key);
  if (it == map.end()) it = map.try_emplace(ShortString(key)).first;
  return it->second;
}

}  // namespace chat
