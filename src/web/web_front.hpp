#pragma once
// What chatd's listener talks to when the chat page is on (WEB_UI): GET and
// HEAD of the page's files are answered from the StaticSite, everything else
// goes to the API handler unchanged. A client that asks for JSON on /
// (Accept: application/json, not text/html) gets the API's description.

#include <string_view>

#include "http/http_session.hpp"
#include "web/static_site.hpp"

namespace chat::web {

class WebFront final : public http::RequestHandler {
 public:
  WebFront(const StaticSite& site, http::RequestHandler& api) : site_(site), api_(api) {}

  void handle(http::Request request, std::shared_ptr<http::HttpSession> session) override;
  void decorate(http::Response& response) override { api_.decorate(response); }

 private:
  const StaticSite& site_;
  http::RequestHandler& api_;
};

// True when an Accept header asks for JSON rather than a page.
bool prefers_json(std::string_view accept);

}  // namespace chat::web
