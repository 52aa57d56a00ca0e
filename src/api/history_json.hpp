#pragma once
// The JSON of the history routes: a session summary and a stored message.

#include <boost/json/object.hpp>

#include "store/message_store.hpp"

namespace chat::api {

boost::json::object session_json(const store::SessionSummary& s);
boost::json::object message_json(const store::StoredMessage& m);

}  // namespace chat::api
