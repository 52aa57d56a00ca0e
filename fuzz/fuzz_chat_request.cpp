// POST /api/chat bodies: the parser and validator, then the checks every
// accepted request must pass (a request that gets through is a valid one).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/chat_request.hpp"
#include "common/identifier.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  chat::api::ChatLimits limits{200};
  auto r = chat::api::parse_chat_request(body, limits);
  if (r.request.has_value() == r.error.has_value()) std::abort();
  if (r.request) {
    const auto& q = *r.request;
    if (!chat::is_valid_identifier(q.session_id) || !chat::is_valid_identifier(q.user_id)) std::abort();
    if (q.message.empty() || q.message.find('\0') != std::string::npos) std::abort();
    if (q.temperature && !(std::isfinite(*q.temperature) && *q.temperature >= 0 && *q.temperature <= 2)) std::abort();
    if (q.max_tokens && (*q.max_tokens < 1 || *q.max_tokens > 1'000'000)) std::abort();
  } else if (r.error->code != "invalid_request" && r.error->code != "invalid_json") {
    std::abort();
  }
  chat::api::is_json_content_type(body);
  return 0;
}
