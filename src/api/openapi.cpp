#include "api/openapi.hpp"

namespace chat::api {

http::Response openapi_response() {
  http::Response res{http::Status::ok, 11};
  res.set(boost::beast::http::field::content_type, "application/yaml");
  res.set(boost::beast::http::field::cache_control, "no-cache");
  res.body() = std::string(openapi_document());
  return res;
}

}  // namespace chat::api
