#pragma once
// NATS subject wildcards, for the in-process bus: "*" matches one token, ">"
// the rest (at least one token).

#include <string_view>

namespace chat::bus {

bool subject_matches(std::string_view pattern, std::string_view subject);

}  // namespace chat::bus
