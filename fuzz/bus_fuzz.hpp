#pragma once
// What every bus decoder target checks: decoding never crashes, and a message
// that decodes encodes to text that decodes to the same message (so a pod or a
// worker never forwards what the next hop refuses, and no non-finite number
// survives: encoded it would be "Infinity", which is not JSON).
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/messages.hpp"

template <class Decode>
void round_trip(std::string_view text, Decode decode) {
  std::string error;
  auto first = decode(text, error);
  if (!first) {
    if (error.empty()) std::abort();
    return;
  }
  auto wire = chat::protocol::encode(*first);
  auto second = decode(wire, error);
  if (!second) std::abort();
  if (chat::protocol::encode(*second) != wire) std::abort();
}
