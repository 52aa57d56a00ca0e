#include "web/web_front.hpp"

namespace bhttp = boost::beast::http;

namespace chat::web {

bool prefers_json(std::string_view accept) {
  return accept.find("application/json") != std::string_view::npos && accept.find("text/html") == std::string_view::npos;
}

void WebFront::handle(http::Request request, std::shared_ptr<http::HttpSession> session) {
  std::string_view target = request.target();
  auto path = target.substr(0, target.find('?'));
  if (!(path == "/" && prefers_json(request[bhttp::field::accept]))) {
    if (auto response = site_.answer(request, path)) return session->respond(std::move(*response));
  }
  api_.handle(std::move(request), std::move(session));
}

}  // namespace chat::web
