#include "api/api_call.hpp"

namespace bhttp = boost::beast::http;

namespace chat::api {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

std::string CorsPolicy::allow_origin(std::string_view origin) const {
  if (any_origin()) return "*";
  if (origin.empty()) return {};
  std::string_view list = allowed_;
  while (!list.empty()) {
    auto comma = list.find(',');
    if (trim(list.substr(0, comma)) == origin) return std::string(origin);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
  return {};
}

std::optional<std::string_view> ApiCall::param(std::string_view key) const {
  auto it = query.find(key);
  if (it == query.end()) return std::nullopt;
  return std::string_view(it->second);
}

void ApiCall::record(unsigned status) {
  auto method = std::string(bhttp::to_string(request.method()));
  if (span.recording()) {
    span.rename(method + " " + route);  // OpenTelemetry's HTTP server span name
    span.set("http.request.method", method);
    span.set("http.route", route);
    span.set("http.response.status_code", static_cast<std::int64_t>(status));
    span.set("chat.correlation_id", correlation_id);
    if (status >= 500) span.fail(std::to_string(status));
    span.end();
  }
  if (!metrics) return;
  metrics->requests.at({route, method, std::to_string(status)}).add();
  metrics->duration.at({route}).observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

void ApiCall::respond(http::Response res) {
  record(res.result_int());
  res.set("X-Correlation-ID", correlation_id);
  auto allowed = cors->allow_origin(origin);
  if (!allowed.empty()) {
    res.set(bhttp::field::access_control_allow_origin, allowed);
    res.set(bhttp::field::access_control_expose_headers, kExposedHeaders);
  }
  // With an origin list the answer depends on Origin, matched or not: a cache
  // must not hand one origin's answer to another.
  if (!cors->any_origin()) res.set(bhttp::field::vary, "Origin");
  session->respond(std::move(res));
}

}  // namespace chat::api
