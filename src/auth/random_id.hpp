#pragma once
// Ids that stand in for a capability (a server-made session id): 128 bits from
// the operating system's CSPRNG, not the fast generator of common/identifier,
// whose output can be predicted from earlier ids.

#include <string>
#include <string_view>

namespace chat::auth {

// prefix + 32 hex digits. Throws std::runtime_error if no randomness is available.
std::string unguessable_id(std::string_view prefix);

}  // namespace chat::auth
