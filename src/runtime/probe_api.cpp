#include "runtime/probe_api.hpp"

#include <boost/json.hpp>

namespace bhttp = boost::beast::http;

namespace chat::runtime {

void ProbeApi::handle(http::Request request, std::shared_ptr<http::HttpSession> session) {
  auto target = std::string_view(request.target());
  auto path = target.substr(0, target.find('?'));
  if (request.method() != bhttp::verb::get && request.method() != bhttp::verb::head) {
    auto res = http::error_response(http::Status::method_not_allowed, "method_not_allowed", "only GET is served here");
    res.set(bhttp::field::allow, "GET");
    return session->respond(std::move(res));
  }
  http::Response res{http::Status::ok, 11};
  res.set(bhttp::field::cache_control, "no-store");
  if (path == "/metrics") {
    res.set(bhttp::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = metrics_.render();
  } else if (path == "/health") {
    auto [healthy, body] = answers_.health();
    res.result(healthy ? http::Status::ok : http::Status::service_unavailable);
    res.set(bhttp::field::content_type, "application/json");
    res.body() = std::move(body);
  } else if (path == "/ready") {
    bool ready = answers_.ready();
    res = http::json_response(ready ? http::Status::ok : http::Status::service_unavailable,
                              boost::json::object{{"ready", ready}});
  } else {
    res = http::error_response(http::Status::not_found, "not_found", "no such resource: " + std::string(path));
  }
  session->respond(std::move(res));
}

}  // namespace chat::runtime
