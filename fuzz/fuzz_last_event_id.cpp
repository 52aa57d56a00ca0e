// Last-Event-ID and ?last_event_id=: a cursor that parses must print back as
// the same text, so a resumed stream starts exactly where the client was.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/identifier.hpp"
#include "sse/resume_cursor.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cursor = chat::sse::parse_last_event_id(text);
  if (!cursor) return 0;
  if (!chat::is_valid_identifier(cursor->message_id)) std::abort();
  auto again = chat::sse::parse_last_event_id(chat::sse::event_id(cursor->message_id, cursor->chunk_id));
  if (!again || again->message_id != cursor->message_id || again->chunk_id != cursor->chunk_id) std::abort();
  return 0;
}
