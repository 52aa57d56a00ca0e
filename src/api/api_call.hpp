#pragma once
// One HTTP request being answered: its parsed target, its correlation id, and
// the way back to the client with the headers every answer carries.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http/http_session.hpp"
#include "metrics/metrics.hpp"
#include "trace/span.hpp"

namespace chat::api {

// Response headers a page on an allowed origin may read: not on the CORS
// safelist, so hidden from its script unless named (a 429's wait, a log key).
inline constexpr std::string_view kExposedHeaders = "Retry-After, X-Correlation-ID";

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

// Requests by route template (never an id), method and status, and their duration.
struct ApiMetrics {
  metrics::Labelled<metrics::Counter> requests{{"route", "method", "code"}};
  metrics::Labelled<metrics::Histogram> duration{{"route"}};
};

struct ApiCall {
  http::Request request;
  std::string route = "other";  // the route template, for metrics
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::chrono::system_clock::time_point started_at = std::chrono::system_clock::now();  // for its span
  ApiMetrics* metrics = nullptr;
  std::shared_ptr<http::HttpSession> session;
  std::string path;
  std::map<std::string, std::string, std::less<>> query;
  std::string correlation_id;
  std::string origin;
  const CorsPolicy* cors = nullptr;
  // The request's server span (not recording for probes, or with tracing off).
  trace::Span span;

  // nullopt when the parameter is absent (present but empty is "").
  std::optional<std::string_view> param(std::string_view key) const;
  void respond(http::Response res);
  // Counts the answer (the SSE upgrade counts as 200) and ends the span.
  void record(unsigned status);
};

}  // namespace chat::api
