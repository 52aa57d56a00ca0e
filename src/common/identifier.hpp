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

}  // namespace chat
