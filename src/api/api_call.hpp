#pragma once
// One HTTP request being answered: its parsed target, its correlation id, and
// the way back to the client with the headers every answer carries.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http/http_session.hpp"

namespace chat::api {

// SERVER_CORS_ORIGINS: "*" or a comma-separated list of origins.
class CorsPolicy {
 public:
  explicit CorsPolicy(std::string allowed) : allowed_(std::move(allowed)) {}
  // The Access-Control-Allow-Origin value for a request from `origin`; empty: none.
  std::string allow_origin(std::string_view origin) const;
  bool any_origin() const { return allowed_ == "*"; }

 private:
  std::string allowed_;
};

struct ApiCall {
  http::Request request;
  std::shared_ptr<http::HttpSession> session;
  std::string path;
  std::map<std::string, std::string, std::less<>> query;
  std::string correlation_id;
  std::string origin;
  const CorsPolicy* cors = nullptr;

  // nullopt when the parameter is absent (present but empty is "").
  std::optional<std::string_view> param(std::string_view key) const;
  void respond(http::Response res);
};

}  // namespace chat::api
