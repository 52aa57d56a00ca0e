#pragma once
// The JSON of the history routes: a session summary and a stored message.

#include <boost/json/object.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "store/message_store.hpp"

namespace chat::api {

boost::json::object session_json(const store::SessionSummary& s);

// The body of GET /api/sessions: {"sessions","next_before"}.
boost::json::object session_page_json(const store::SessionPage& page);
// A session cursor as clients pass it back: "<last_message_at in µs>.<session_id>"
// ('.' is no identifier character). nullopt for anything else.
std::string to_text(const store::SessionCursor& cursor);
std::optional<store::SessionCursor> parse_session_cursor(std::string_view text);
boost::json::object message_json(const store::StoredMessage& m);

// The body of GET /api/sessions/{id}/messages: {"messages","next_before"}.
// The page is cut to the newest messages whose JSON fits `max_bytes` (the
// newest one is always kept, whatever its size), so 200 long messages cannot
// make one answer of tens of megabytes; next_before then names the oldest
// message kept, and the older ones come with the next page as usual.
boost::json::object message_page_json(const store::MessagePage& page, std::size_t max_bytes);

}  // namespace chat::api
