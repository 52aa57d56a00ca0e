#pragma once
// Where a request carries its bearer token (docs/API.md §2, Authentication).
// Every route reads `Authorization: Bearer <token>`. GET /api/sse also reads
// the access_token query parameter and the chat_token cookie, because a
// browser's EventSource cannot set headers. The token is never logged: request
// logs carry the path only, never the query.

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "http/http_session.hpp"

namespace chat::api {

using Query = std::map<std::string, std::string, std::less<>>;

// nullopt: the request carries no credential at all. A credential that is not
// a bearer token (Authorization: Basic …) comes back as "", an invalid token.
std::optional<std::string_view> bearer_token(const http::Request& request, const Query& query, bool event_stream);

}  // namespace chat::api
