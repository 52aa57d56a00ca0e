#pragma once
// The HTTP API (docs/API.md, "HTTP API"): routing, input checks, JSON and
// status codes. Everything a request does beyond reading history goes through
// the Pod; history reads and deletes go to the store. It never knows which
// implementation of the bus, registry or store is behind them.
//
// Who calls: with an Authenticator (AUTH_MODE=jwt) the bearer token's subject,
// else (AUTH_MODE=none) the user_id the request names. Either way a session or
// reply of another user is answered like one that does not exist.

#include <string>
#include <vector>

#include "api/api_call.hpp"
#include "api/chat_request.hpp"
#include "auth/authenticator.hpp"
#include "common/callback_gate.hpp"
#include "http/http_session.hpp"
#include "pod/pod.hpp"
#include "store/message_store.hpp"
#include "trace/tracer.hpp"

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
  const auth::Authenticator* authenticator = nullptr;  // null: AUTH_MODE=none
  trace::Tracer tracer{};  // off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
  // CHAT_HISTORY_MAX_BYTES: the most JSON one history page carries (docs/API.md §3.4).
  std::size_t history_max_bytes = 1024 * 1024;
  // SERVER_MAX_BODY_BYTES, told to clients by GET /api: a message within
  // CHAT_MAX_MESSAGE_CHARS may still not fit (3 bytes a character in CJK).
  std::size_t max_body_bytes = 64 * 1024;
};

class ChatApi final : public http::RequestHandler {
 public:
  // `metrics` renders GET /metrics (null: no such route); `admission` applies
  // the request, chat and stream limits (null: none).
  ChatApi(ApiOptions options, pod::Pod& pod, store::MessageStore& store, const metrics::Registry* metrics = nullptr,
          limits::Admission* admission = nullptr);
  // Answers still to come (the store's, the pod's, the limiter's) are dropped
  // from now on; one being handed on is waited for.
  ~ChatApi() override;

  // The API's own metrics: requests and their duration by route (any thread).
  void collect(metrics::Exposition& out) const;

  void handle(http::Request request, std::shared_ptr<http::HttpSession> session) override;
  void decorate(http::Response& response) override;

 private:
  using Call = std::shared_ptr<ApiCall>;
  void start_span(ApiCall& call) const;
  void serve(Call call);
  void route(Call call);
  // AUTH_MODE=jwt: the token's subject; nullopt after answering 401. none: "".
  std::optional<std::string> authenticate(const Call& call, bool event_stream) const;
  // The user the request acts for: `claimed` (none; 400 when not an identifier)
  // or `subject`, which a `claimed` user must be (jwt; 403 otherwise).
  std::optional<std::string> acting_user(const Call& call, const std::string& subject,
                                         std::optional<std::string_view> claimed) const;
  // Both, with the user_id of the query string.
  std::optional<std::string> caller(const Call& call, bool event_stream = false) const;
  // Both, with the user_id of the query string or of a JSON body.
  std::optional<std::string> body_caller(const Call& call) const;
  void create_session(Call call);
  void post_chat(Call call);
  void submit_chat(Call call, pod::ChatRequest request);
  void open_stream(Call call);
  void claim_then_hand_over(Call call, pod::StreamRequest stream, std::string user);
  void hand_over_stream(const Call& call, pod::StreamRequest stream);
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
  limits::Admission* admission_;
  const metrics::Registry* registry_;
  mutable ApiMetrics metrics_;
  // Every answer from another thread comes through it: at shutdown the store
  // and the bus answer their last calls while the program destroys the API.
  CallbackGate gate_;
};

}  // namespace chat::api
