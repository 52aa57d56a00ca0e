#pragma once
// One spilled assistant reply as one line of the spill journal: a JSON object,
// which escapes every newline, so a record never spans lines. Any bytes survive
// the round trip (content that is not UTF-8, NUL), so the database, not the
// journal, decides what it accepts.

#include <optional>
#include <string>
#include <string_view>

#include "store/message_store.hpp"

namespace chat::store {

// The record without its line end.
std::string encode_spill_record(const AssistantMessage& m);
// nullopt when `line` is not a record of this format.
std::optional<AssistantMessage> decode_spill_record(std::string_view line);
// A record of a later format than this build writes (a newer chatd's, left
// behind by a rollback): for a chatd that can read it, not to be dropped.
bool is_newer_spill_record(std::string_view line);

}  // namespace chat::store
