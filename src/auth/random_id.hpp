#pragma once
// Ids that stand in for a capability (a server-made session id): random bits
// from the operating system's CSPRNG, not the fast generator of
// common/identifier, whose output can be predicted from earlier ids.

#include <string>
#include <string_view>

namespace chat::auth {

// prefix + 21 base64url characters (126 random bits). With a prefix of two
// characters the id is 23 long: a stream, its session's channel and the
// registry's entry each keep it inline, without a heap block of its own.
// Throws std::runtime_error if no randomness is available.
std::string unguessable_id(std::string_view prefix);

}  // namespace chat::auth
