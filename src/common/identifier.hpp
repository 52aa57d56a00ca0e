#pragma once
// Identifiers (session, user, pod, message, connection ids) are spliced into NATS
// subjects and Redis keys, so the character set is the security boundary:
// 1..128 characters of [A-Za-z0-9_-]. Nothing else may reach a subject or key.

#include <string>
#include <string_view>

namespace chat {

inline constexpr std::size_t kMaxIdentifierLength = 128;

bool is_valid_identifier(std::string_view id) noexcept;

// A fresh random identifier such as "msg_3f9a…" (prefix + 24 hex digits).
std::string new_identifier(std::string_view prefix);

// Prefix + 10 characters of [0-9A-Za-z] (59 random bits): for ids that need
// only be unique among what one process holds at once, such as its streams'
// connection ids (the registry's keys carry the pod id). With a prefix of at
// most 5 characters the id fits std::string's inline buffer, so every copy an
// idle stream keeps costs no heap block.
std::string new_compact_identifier(std::string_view prefix);

}  // namespace chat
