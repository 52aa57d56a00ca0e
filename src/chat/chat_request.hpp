#pragma once
// Validation of what clients send (SPEC section 3). Pure functions: they turn
// untrusted text into checked values or a precise complaint.

#include <optional>
#include <string>
#include <string_view>

#include "protocol/messages.hpp"

namespace chat {

struct ValidationError {
  std::string code;  // invalid_request | invalid_json
  std::string message;
};

struct ChatRequest {
  std::string session_id;
  std::string user_id;
  std::string message;
  std::string ai_provider;
  std::string model;
  std::optional<double> temperature;
  std::optional<std::int64_t> max_tokens;
  std::string system_prompt;
};

struct ChatLimits {
  std::size_t max_message_chars = 32'000;
};

// Parses a POST /api/chat body. Exactly one of the two is set.
struct ChatRequestResult {
  std::optional<ChatRequest> request;
  std::optional<ValidationError> error;
};
ChatRequestResult parse_chat_request(std::string_view body, const ChatLimits& limits);

// Characters (Unicode code points) in valid UTF-8 text.
std::size_t utf8_length(std::string_view text);

// True for "application/json" with optional parameters (charset=utf-8).
bool is_json_content_type(std::string_view content_type);

// Checks one identifier field; nullopt when it is fine.
std::optional<ValidationError> check_identifier(std::string_view field, std::optional<std::string_view> value);

}  // namespace chat
