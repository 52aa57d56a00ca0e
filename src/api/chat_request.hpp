#pragma once
// Validation of what clients send (docs/API.md, "HTTP API"). Pure functions:
// they turn untrusted text into checked values or a precise complaint.

#include <optional>
#include <string>
#include <string_view>

#include "pod/pod.hpp"

namespace chat::api {

struct ValidationError {
  std::string code;  // invalid_request | invalid_json
  std::string message;
};

struct ChatLimits {
  std::size_t max_message_chars = 32'000;
};

// Parses a POST /api/chat body. Exactly one of the two is set.
struct ChatRequestResult {
  std::optional<pod::ChatRequest> request;
  std::optional<ValidationError> error;
};
// `user_id_required` false (AUTH_MODE=jwt: the token names the user): an absent
// user_id leaves it empty; a present one must still be an identifier.
ChatRequestResult parse_chat_request(std::string_view body, const ChatLimits& limits, bool user_id_required = true);

// True for "application/json" with optional parameters (charset=utf-8).
bool is_json_content_type(std::string_view content_type);

// Checks one identifier field; nullopt when it is fine.
std::optional<ValidationError> check_identifier(std::string_view field, std::optional<std::string_view> value);

}  // namespace chat::api
