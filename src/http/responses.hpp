#pragma once
// HTTP types and the JSON responses every endpoint shares.

#include <boost/beast/http.hpp>
#include <boost/json/value.hpp>

#include <string_view>

namespace chat::http {

namespace beast_http = boost::beast::http;
using Request = beast_http::request<beast_http::string_body>;
using Response = beast_http::response<beast_http::string_body>;
using Status = beast_http::status;

Response json_response(Status status, const boost::json::value& body);
// {"error":{"code","message"}}
Response error_response(Status status, std::string_view code, std::string_view message);

}  // namespace chat::http
