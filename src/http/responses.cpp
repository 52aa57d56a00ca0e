#include "http/responses.hpp"

#include <boost/json/serialize.hpp>

namespace chat::http {

Response json_response(Status status, const boost::json::value& body) {
  Response res{status, 11};
  res.set(beast_http::field::content_type, "application/json");
  res.set(beast_http::field::cache_control, "no-store");
  res.body() = boost::json::serialize(body);
  return res;
}

Response error_response(Status status, std::string_view code, std::string_view message) {
  return json_response(status, boost::json::object{{"error", boost::json::object{{"code", code}, {"message", message}}}});
}

}  // namespace chat::http
