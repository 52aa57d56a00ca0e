#pragma once
// The HTTP API (docs/API.md, "HTTP API"): routing, input checks, JSON and
// status codes. Everything a request does beyond reading history goes through
// the Pod; history reads and deletes go to the store. It never knows which
// implementation of the bus, registry or store is behind them.

#include <string>
#include <vector>

#include "api/api_call.hpp"
#include "api/chat_request.hpp"
#include "http/http_session.hpp"
#include "pod/pod.hpp"
#include "store/message_store.hpp"

namespace chat::api {

// A provider clients may choose (GET /api/providers): never its key.
struct ProviderOffer {
  std::string name;
  std::string default_model;
};

struct ApiOptions {
  std::string cors_origins = "*";
  ChatLimits chat;
  std::vector<ProviderOffer> providers{};  // {}: aggregate initialisations may leave these out
  std::string default_provider{};
  // CHAT_HISTORY_MAX_BYTES: the most JSON one history page carries (docs/API.md §3.4).
  std::size_t history_max_bytes = 1024 * 1024;
};

class ChatApi final : public http::RequestHandler {
 public:
  // `metrics` renders GET /metrics (null: no such route).
  ChatApi(ApiOptions options, pod::Pod& pod, store::MessageStore& store, const metrics::Registry* metrics = nullptr);

  // The API's own metrics: requests and their duration by route (any thread).
  void collect(metrics::Exposition& out) const;

  void handle(http::Request request, std::shared_ptr<http::HttpSession> session) override;
  void decorate(http::Response& response) override;

 private:
  using Call = std::shared_ptr<ApiCall>;
  void route(Call call);
  void post_chat(Call call);
  void open_stream(Call call);
  void cancel_reply(Call call, std::string message_id);
  void list_sessions(Call call);
  void list_messages(Call call, std::string session_id);
  void delete_session(Call call, std::string session_id);
  http::Response health_response() const;
  http::Response ready_response() const;
  http::Response info_response() const;
  http::Response metrics_response() const;
  http::Response providers_response() const;

  ApiOptions options_;
  CorsPolicy cors_;
  pod::Pod& pod_;
  store::MessageStore& store_;
  const metrics::Registry* registry_;
  mutable ApiMetrics metrics_;
};

}  // namespace chat::api
