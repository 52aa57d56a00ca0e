#pragma once
// How provider failures become the error chunk's code and message. Codes are
// stable (clients and dashboards match on them); messages are for people, come
// partly from the provider, and are cleaned of anything that looks like a key.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace chat::providers {

namespace provider_code {
inline constexpr std::string_view kNotConfigured = "provider_not_configured";  // key missing
inline constexpr std::string_view kAuthFailed = "provider_auth_failed";        // 401, 403
inline constexpr std::string_view kModelNotFound = "model_not_found";          // 404
inline constexpr std::string_view kRateLimited = "rate_limited";               // 429
inline constexpr std::string_view kUnavailable = "provider_unavailable";       // 5xx, connect/TLS failure, lost connection
inline constexpr std::string_view kTimeout = "provider_timeout";               // connect or read timeout
inline constexpr std::string_view kBadResponse = "provider_bad_response";      // malformed or truncated stream
inline constexpr std::string_view kContentFiltered = "content_filtered";       // the provider's filter stopped the reply
inline constexpr std::string_view kError = "provider_error";                   // other 4xx, provider error events
}  // namespace provider_code

struct ProviderFailure {
  std::string code;
  std::string message;
  bool retryable = false;  // worth another attempt when no text was sent yet
  std::optional<std::chrono::milliseconds> retry_after;
};

// A non-2xx answer: status plus the message found in its body.
ProviderFailure failure_from_status(std::string_view provider, unsigned status, std::string_view body_message,
                                    std::optional<std::chrono::milliseconds> retry_after);

// The human message of a JSON error body in the shapes providers use:
// {"error":{"message":..}} (OpenAI, Anthropic), {"error":".."} (Ollama),
// {"message":..}, {"detail":..} (FastAPI-based servers). Falls back to the
// body's text when it is short and printable; empty otherwise.
std::string error_message_from_body(std::string_view body);

// Retry-After (seconds) or retry-after-ms (OpenAI); nullopt when absent or an
// HTTP date (the backoff then applies).
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view seconds, std::string_view millis);

// Makes provider text fit for an error chunk: removes `secret`, masks
// key-shaped tokens (sk-..., sk-ant-...), drops control characters and cuts it
// to a sane length.
std::string sanitize_message(std::string_view text, std::string_view secret);

}  // namespace chat::providers
