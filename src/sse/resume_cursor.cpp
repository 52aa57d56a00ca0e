#include "sse/resume_cursor.hpp"

#include <charconv>

#include "common/identifier.hpp"

namespace chat::sse {

std::string event_id(std::string_view message_id, std::uint32_t chunk_id) {
  std::string id;
  id.reserve(message_id.size() + 11);
  id += message_id;
  id += ':';
  id += std::to_string(chunk_id);
  return id;
}

std::optional<ResumeCursor> parse_last_event_id(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto message = text.substr(0, colon);
  auto number = text.substr(colon + 1);
  std::uint32_t id = 0;
  auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), id);
  if (!is_valid_identifier(message) || number.empty() || ec != std::errc{} || ptr != number.data() + number.size())
    return std::nullopt;
  return ResumeCursor{std::string(message), id};
}

}  // namespace chat::sse
