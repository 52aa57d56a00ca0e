#pragma once
// The SSE event id of a chunk, "<message_id>:<chunk_id>", and the cursor a
// reconnecting client sends back as Last-Event-ID.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chat::sse {

struct ResumeCursor {
  std::string message_id;
  std::uint32_t chunk_id = 0;
  bool operator==(const ResumeCursor&) const = default;
};

std::string event_id(std::string_view message_id, std::uint32_t chunk_id);
// nullopt for anything that is not a valid message id, ':' and a chunk number.
std::optional<ResumeCursor> parse_last_event_id(std::string_view text);

}  // namespace chat::sse
