// Longer than most files: the routes of the HTTP API side by side (each
// handler is short), so that their checks, errors and status codes read, and
// stay, alike. Parsing a chat body, the caller's credentials and history JSON
// live in files of their own.

#include "api/chat_api.hpp"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include "api/credentials.hpp"
#include "api/history_json.hpp"
#include "api/openapi.hpp"
#include "auth/random_id.hpp"
#include "common/identifier.hpp"
#include "log/log.hpp"
#include "sse/events.hpp"

namespace json = boost::json;
namespace bhttp = boost::beast::http;

namespace chat::api {
namespace {

using http::Status;

http::Response error(Status status, std::string_view code, std::string_view message) {
  return http::error_response(status, code, message);
}

http::Response unavailable(std::string_view message) {
  auto res = error(Status::service_unavailable, "unavailable", message);
  res.set(bhttp::field::retry_after, "2");
  return res;
}

// 429: the wait is rounded up to whole seconds, at least one.
http::Response rate_limited(std::chrono::milliseconds retry_after, std::string_view message) {
  auto res = error(Status::too_many_requests, "rate_limited", message);
  res.set(bhttp::field::retry_after, std::to_string(std::max<long long>(1, (retry_after.count() + 999) / 1000)));
  return res;
}

// Probes and scrapes are never limited: a flood must not make a pod look dead.
bool is_probe(std::string_view path) { return path == "/health" || path == "/ready" || path == "/metrics"; }

http::Response invalid(const ValidationError& e) { return error(Status::bad_request, e.code, e.message); }

// 401 (RFC 6750 §3): error="invalid_token" only when a token was sent.
http::Response unauthorized(bool token_sent, std::string_view message) {
  auto res = error(Status::unauthorized, "unauthorized", message);
  res.set(bhttp::field::www_authenticate, token_sent ? R"(Bearer error="invalid_token")" : "Bearer");
  res.set(bhttp::field::cache_control, "no-store");
  return res;
}

// One lease holding two (a stream's per-user and per-address tickets), so a
// stream keeps a single pointer whatever it holds.
std::shared_ptr<void> both(std::shared_ptr<void> a, std::shared_ptr<void> b) {
  if (!a) return b;
  if (!b) return a;
  return std::make_shared<std::pair<std::shared_ptr<void>, std::shared_ptr<void>>>(std::move(a), std::move(b));
}

// Routes that name a session or a reply answer another user's like a missing
// one: whether an id exists is nobody else's business.
boost::system::error_code hide_owner(boost::system::error_code ec) {
  if (ec == store::Errc::forbidden) return store::Errc::not_found;
  if (ec == pod::Errc::not_owner) return pod::Errc::no_running_reply;
  return ec;
}

// The answer to a failed pod or store call; `what` names the resource for a 404.
http::Response failure(boost::system::error_code ec, std::string_view what) {
  if (ec == store::Errc::forbidden) return error(Status::forbidden, "forbidden", "this session belongs to another user");
  if (ec == store::Errc::not_found) return error(Status::not_found, "not_found", std::string(what) + " not found");
  if (ec == pod::Errc::not_owner) return error(Status::forbidden, "forbidden", "this reply belongs to another user");
  if (ec == pod::Errc::no_running_reply)
    return error(Status::not_found, "not_found", "no running reply with this message_id");
  if (ec == pod::Errc::too_many_replies)
    return rate_limited(std::chrono::seconds(5), "too many of your replies are running; wait for one to finish");
  if (ec == pod::Errc::draining) return unavailable("this pod is shutting down");
  if (ec == pod::Errc::memory_full)
    return unavailable("this pod holds as many replies in flight as its memory limits allow; try again shortly");
  if (ec == pod::Errc::bus_unavailable) return unavailable("the message bus is unreachable; try again shortly");
  return unavailable("the message store is unavailable; try again shortly");
}

// The user_id a request names in its query, else in its JSON body (POST routes
// whose body is optional). False after answering 400 for a body that is not a
// JSON object.
bool named_user(ApiCall& call, std::optional<std::string>& named) {
  if (auto q = call.param("user_id")) {
    named = std::string(*q);
    return true;
  }
  if (call.request.body().empty()) return true;
  boost::system::error_code ec;
  auto body = json::parse(call.request.body(), ec);
  if (ec || !body.is_object()) {
    call.respond(error(Status::bad_request, "invalid_json", "the body must be a JSON object"));
    return false;
  }
  if (auto* u = body.get_object().if_contains("user_id"); u && u->is_string()) named = std::string(u->get_string());
  return true;
}

std::optional<std::size_t> parse_limit(std::optional<std::string_view> text, std::size_t fallback) {
  if (!text || text->empty()) return fallback;
  std::size_t n = 0;
  for (char c : *text) {
    if (c < '0' || c > '9' || n > 1'000'000) return std::nullopt;
    n = n * 10 + static_cast<std::size_t>(c - '0');
  }
  if (n < 1 || n > 200) return std::nullopt;
  return n;
}

// Every X-Forwarded-For line, in order, as one list (RFC 9110 §5.3): a proxy
// may add a line of its own instead of extending the client's, and only the
// entries right of the client's count.
std::string forwarded_for(const http::Request& request) {
  std::string out;
  for (auto [it, end] = request.equal_range("X-Forwarded-For"); it != end; ++it) {
    if (!out.empty()) out += ", ";
    out += it->value();
  }
  return out;
}

// "/api/sessions/{id}" or "/api/sessions/{id}/messages": the id, and whether
// it is the latter. Split at the first slash after the prefix, so an id may
// be any identifier ("messages" too).
std::optional<std::pair<std::string_view, bool>> split_session_path(std::string_view path) {
  constexpr std::string_view kSessions = "/api/sessions/", kMessages = "/messages";
  if (!path.starts_with(kSessions)) return std::nullopt;
  auto rest = path.substr(kSessions.size());
  auto slash = rest.find('/');
  if (slash == std::string_view::npos) return std::pair{rest, false};
  if (rest.substr(slash) != kMessages) return std::nullopt;
  return std::pair{rest.substr(0, slash), true};
}

}  // namespace

ChatApi::ChatApi(ApiOptions options, pod::Pod& pod, store::MessageStore& store, const metrics::Registry* metrics,
                 limits::Admission* admission)
    : options_(std::move(options)),
      cors_(options_.cors_origins),
      pod_(pod),
      store_(store),
      admission_(admission),
      registry_(metrics) {}

ChatApi::~ChatApi() { gate_.close(); }

void ChatApi::collect(metrics::Exposition& out) const {
  metrics_.requests.each([&](const metrics::Labels& labels, const metrics::Counter& c) {
    out.counter("chat_http_requests_total", "HTTP requests answered, by route, method and status code.",
                static_cast<double>(c.value()), labels);
  });
  metrics_.duration.each([&](const metrics::Labels& labels, const metrics::Histogram& h) {
    out.histogram("chat_http_request_duration_seconds", "From a request read to its answer, by route.", h.snapshot(),
                  labels);
  });
}

http::Response ChatApi::metrics_response() const {
  http::Response res{Status::ok, 11};
  res.set(bhttp::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.set(bhttp::field::cache_control, "no-store");
  res.body() = registry_->render();
  return res;
}

void ChatApi::decorate(http::Response& response) {
  if (!cors_.any_origin()) return;
  response.set(bhttp::field::access_control_allow_origin, "*");
  response.set(bhttp::field::access_control_expose_headers, kExposedHeaders);
}

void ChatApi::handle(http::Request request, std::shared_ptr<http::HttpSession> session) {
  auto call = std::make_shared<ApiCall>();
  call->cors = &cors_;
  call->metrics = &metrics_;
  call->session = std::move(session);
  auto cid = request["X-Correlation-ID"];
  call->correlation_id = is_valid_identifier(cid) ? std::string(cid) : new_identifier("corr_");
  call->origin = std::string(request[bhttp::field::origin]);
  auto target = boost::urls::parse_origin_form(request.target());
  call->request = std::move(request);
  if (!target) {
    // Not origin-form (a fragment, "*", absolute-form, bad escapes): the HTTP
    // request itself is malformed, answered and closed as such.
    auto res = error(Status::bad_request, "bad_request", "the request target is not a valid URL");
    res.keep_alive(false);
    return call->respond(std::move(res));
  }
  call->path = std::string(target->encoded_path());
  for (auto param : target->params()) call->query.emplace(param.key, param.value);
  if (options_.tracer.enabled() && !is_probe(call->path)) start_span(*call);
  if (!admission_ || is_probe(call->path)) return serve(std::move(call));
  auto peer = call->session->peer();
  auto forwarded = forwarded_for(call->request);  // before `call` moves into the callback
  admission_->request(peer, forwarded, gate_.guard([this, call = std::move(call)](limits::Verdict v) mutable {
    if (!v.allowed) return call->respond(rate_limited(v.retry_after, "too many requests from this address"));
    serve(std::move(call));
  }));
}

// The caller's trace continues here; a missing, repeated or malformed
// traceparent starts a new one (W3C Trace Context).
void ChatApi::start_span(ApiCall& call) const {
  trace::SpanContext parent;
  if (call.request.count("traceparent") == 1)
    if (auto p = trace::parse_traceparent(call.request["traceparent"], call.request["tracestate"])) parent = *p;
  call.span = options_.tracer.start("HTTP", trace::SpanKind::server, parent, call.started_at);
}

void ChatApi::serve(Call call) {
  if (call->request.method() == bhttp::verb::options) {
    http::Response res{Status::no_content, 11};
    res.set(bhttp::field::access_control_allow_methods, "GET, POST, DELETE, OPTIONS");
    res.set(bhttp::field::access_control_allow_headers, "Content-Type, Authorization, Last-Event-ID, X-Correlation-ID, traceparent, tracestate");
    res.set(bhttp::field::access_control_max_age, "86400");
    return call->respond(std::move(res));
  }
  route(std::move(call));
}

void ChatApi::route(Call call) {
  const std::string_view path = call->path;
  const auto method = call->request.method();
  // True when the method fits; otherwise answers 405 with the allowed ones:
  // HEAD wherever GET is, but on the event stream (it would open a stream
  // that never ends and has no body to leave out).
  auto allow = [&](bhttp::verb wanted, std::string_view allow_header) {
    const bool head_too = path != "/api/sse";
    if (method == wanted || (head_too && wanted == bhttp::verb::get && method == bhttp::verb::head)) return true;
    auto res = error(Status::method_not_allowed, "method_not_allowed",
                     std::string(bhttp::to_string(method)) + " is not allowed on " + std::string(path));
    std::string listed(allow_header);
    if (head_too && listed.starts_with("GET")) listed.insert(3, ", HEAD");
    res.set(bhttp::field::allow, listed);
    call->respond(std::move(res));
    return false;
  };
  constexpr std::string_view kChat = "/api/chat/", kCancel = "/cancel";

  if (path == "/" || path == "/api") {
    call->route = std::string(path);
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(info_response());
  } else if (path == "/api/providers") {
    call->route = "/api/providers";
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(providers_response());
  } else if (path == "/health") {
    call->route = "/health";
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(health_response());
  } else if (path == "/ready") {
    call->route = "/ready";
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(ready_response());
  } else if (path == "/metrics" && registry_) {
    call->route = "/metrics";
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(metrics_response());
  } else if (path == "/openapi.yaml") {
    call->route = "/openapi.yaml";
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(openapi_response());
  } else if (path == "/api/chat") {
    call->route = "/api/chat";
    if (allow(bhttp::verb::post, "POST, OPTIONS")) post_chat(std::move(call));
  } else if (path.starts_with(kChat) && path.ends_with(kCancel) && path.size() >= kChat.size() + kCancel.size()) {
    call->route = "/api/chat/{message_id}/cancel";
    // A bad id in a path is a 400, like a bad one in a query.
    auto id = path.substr(kChat.size(), path.size() - kChat.size() - kCancel.size());
    if (auto e = check_identifier("message_id", id)) return call->respond(invalid(*e));
    if (allow(bhttp::verb::post, "POST, OPTIONS")) cancel_reply(std::move(call), std::string(id));
  } else if (path == "/api/sse") {
    call->route = "/api/sse";
    if (allow(bhttp::verb::get, "GET, OPTIONS")) open_stream(std::move(call));
  } else if (path == "/api/sessions") {
    call->route = "/api/sessions";
    if (method == bhttp::verb::post) create_session(std::move(call));
    else if (allow(bhttp::verb::get, "GET, POST, OPTIONS")) list_sessions(std::move(call));
  } else if (auto session_path = split_session_path(path)) {
    auto [id, messages] = *session_path;
    call->route = messages ? "/api/sessions/{session_id}/messages" : "/api/sessions/{session_id}";
    if (auto e = check_identifier("session_id", id)) return call->respond(invalid(*e));
    if (messages) {
      if (allow(bhttp::verb::get, "GET, OPTIONS")) list_messages(std::move(call), std::string(id));
    } else if (allow(bhttp::verb::delete_, "DELETE, OPTIONS")) {
      delete_session(std::move(call), std::string(id));
    }
  } else {
    call->respond(error(Status::not_found, "not_found", "no such resource: " + std::string(path)));
  }
}

std::optional<std::string> ChatApi::authenticate(const Call& call, bool event_stream) const {
  if (!options_.authenticator) return std::string{};
  auto token = bearer_token(call->request, call->query, event_stream);
  auto verdict = token ? options_.authenticator->verify(*token) : auth::Verdict{auth::Errc::missing_token, {}};
  if (!verdict.error) return std::move(verdict.user_id);
  // The reason, never the token.
  log::info("auth_refused", {{"reason", verdict.error.message()}, {"route", call->route},
                             {"correlation_id", call->correlation_id}});
  call->respond(unauthorized(token.has_value(), verdict.error.message()));
  return std::nullopt;
}

std::optional<std::string> ChatApi::acting_user(const Call& call, const std::string& subject,
                                                std::optional<std::string_view> claimed) const {
  if (!options_.authenticator) {
    if (auto e = check_identifier("user_id", claimed)) {
      call->respond(invalid(*e));
      return std::nullopt;
    }
    return std::string(*claimed);
  }
  if (!claimed || claimed->empty()) return subject;  // with a token, user_id may be left out
  // A malformed id is 400 in both modes, before it is compared with anything.
  if (auto e = check_identifier("user_id", claimed)) {
    call->respond(invalid(*e));
    return std::nullopt;
  }
  if (*claimed != subject) {
    call->respond(error(Status::forbidden, "forbidden", "user_id is not the user the token was issued to"));
    return std::nullopt;
  }
  return subject;
}

std::optional<std::string> ChatApi::caller(const Call& call, bool event_stream) const {
  auto subject = authenticate(call, event_stream);
  if (!subject) return std::nullopt;
  return acting_user(call, *subject, call->param("user_id"));
}

std::optional<std::string> ChatApi::body_caller(const Call& call) const {
  auto subject = authenticate(call, false);
  if (!subject) return std::nullopt;
  std::optional<std::string> named;
  if (!named_user(*call, named)) return std::nullopt;
  return acting_user(call, *subject, named);
}

void ChatApi::create_session(Call call) {
  auto user = body_caller(call);
  if (!user) return;
  auto session_id = auth::unguessable_id("s_");
  store_.claim_session(session_id, *user, gate_.guard([call, session_id](boost::system::error_code ec) {
    if (ec) return call->respond(failure(ec, "session"));
    call->respond(http::json_response(Status::created, json::object{{"session_id", session_id}}));
  }));
}

void ChatApi::post_chat(Call call) {
  auto subject = authenticate(call, false);
  if (!subject) return;
  if (!is_json_content_type(call->request[bhttp::field::content_type]))
    return call->respond(error(Status::unsupported_media_type, "unsupported_media_type",
                               "Content-Type must be application/json"));
  auto parsed = parse_chat_request(call->request.body(), options_.chat, !options_.authenticator);
  if (parsed.error) {
    log::info("chat_rejected", {{"reason", parsed.error->message}, {"correlation_id", call->correlation_id}});
    return call->respond(invalid(*parsed.error));
  }
  const auto& named = parsed.request->user_id;
  auto user = acting_user(call, *subject, named.empty() ? std::nullopt : std::optional<std::string_view>(named));
  if (!user) return;
  parsed.request->user_id = std::move(*user);
  if (!admission_) return submit_chat(std::move(call), std::move(*parsed.request));
  auto acting = parsed.request->user_id;
  admission_->chat(acting, gate_.guard([this, call, request = std::move(*parsed.request)](limits::Verdict v) mutable {
    if (!v.allowed) return call->respond(rate_limited(v.retry_after, "too many chats; wait before sending more"));
    submit_chat(std::move(call), std::move(request));
  }));
}

void ChatApi::submit_chat(Call call, pod::ChatRequest request) {
  auto correlation_id = call->correlation_id;
  request.trace = call->span.context();
  auto answer = [admission = admission_, call, user = request.user_id](boost::system::error_code ec, pod::Accepted a) {
    if (ec) {
      // Refused for the pod's reasons, not for naming a session that is not the user's.
      if (admission && ec != store::Errc::forbidden && ec != store::Errc::not_found) admission->chat_refused(user);
      return call->respond(failure(ec, "session"));
    }
    call->respond(http::json_response(Status::accepted, json::object{{"message_id", a.message_id},
                                                                     {"session_id", a.session_id},
                                                                     {"status", "accepted"},
                                                                     {"timestamp", a.timestamp},
                                                                     {"correlation_id", a.correlation_id}}));
  };
  pod_.submit(std::move(request), std::move(correlation_id), gate_.guard(std::move(answer)));
}

void ChatApi::open_stream(Call call) {
  auto user = caller(call, true);
  if (!user) return;
  auto session_id = call->param("session_id");
  if (auto e = check_identifier("session_id", session_id)) return call->respond(invalid(*e));
  if (pod_.draining()) return call->respond(failure(pod::Errc::draining, {}));
  // EventSource sends Last-Event-ID on reconnect; a query parameter serves
  // clients that cannot set headers. A malformed cursor is ignored.
  auto header = call->request["Last-Event-ID"];
  auto cursor = sse::parse_last_event_id(!header.empty() ? std::string_view(header)
                                                          : call->param("last_event_id").value_or(""));
  pod::StreamRequest stream{std::string(*session_id), cursor, cors_.allow_origin(call->origin), call->correlation_id};
  if (!admission_) return claim_then_hand_over(std::move(call), std::move(stream), std::move(*user));
  // The user's place first: a user at the limit must not get each refused
  // stream's session made (a write, and an empty session to list) all the same.
  auto opener = *user;
  admission_->stream_opens(opener, gate_.guard([this, call, stream = std::move(stream), user = std::move(*user)](
                                                   limits::StreamTicket ticket) mutable {
    if (!ticket) return call->respond(rate_limited(std::chrono::seconds(10), "too many open streams for this user"));
    stream.ticket = std::move(ticket);
    claim_then_hand_over(std::move(call), std::move(stream), std::move(user));
  }));
}

// A stream may come before the session's first message: it claims the session
// for its user, so nobody else can create it and have their replies stream here.
void ChatApi::claim_then_hand_over(Call call, pod::StreamRequest stream, std::string user) {
  auto session = stream.session_id;  // the lambda below takes `stream` by move
  store_.claim_session(std::move(session), std::move(user),
                       gate_.guard([this, call, stream = std::move(stream)](boost::system::error_code ec) mutable {
                         if (ec) return call->respond(failure(hide_owner(ec), "session"));
                         hand_over_stream(call, std::move(stream));
                       }));
}

void ChatApi::hand_over_stream(const Call& call, pod::StreamRequest stream) {
  // The pod may have begun to drain during the store's and the limiter's round
  // trips; it refuses a stream that still slips past (see Pod::open_stream).
  if (pod_.draining()) return call->respond(failure(pod::Errc::draining, {}));
  call->session->upgrade([this, call, stream = std::move(stream)](http::HttpSession::Socket socket,
                                                                  std::shared_ptr<void> address_ticket) mutable {
    stream.ticket = both(std::move(stream.ticket), std::move(address_ticket));
    // Counted as the pod answered: a drain that began meanwhile made it a 503.
    call->record(pod_.open_stream(std::move(socket), std::move(stream)) ? 200 : 503);
  });
}

void ChatApi::cancel_reply(Call call, std::string message_id) {
  // The caller names itself in the query or in a JSON body (or by its token).
  auto user = body_caller(call);
  if (!user) return;
  auto session_id = std::string(call->param("session_id").value_or(""));
  if (!session_id.empty())
    if (auto e = check_identifier("session_id", session_id)) return call->respond(invalid(*e));
  pod_.cancel(message_id, std::move(session_id), std::move(*user), gate_.guard([call, message_id](boost::system::error_code ec) {
    if (ec) return call->respond(failure(hide_owner(ec), "reply"));
    log::info("cancel_accepted", {{"message_id", message_id}, {"correlation_id", call->correlation_id}});
    call->respond(http::json_response(Status::accepted, json::object{{"message_id", message_id}, {"status", "cancelling"}}));
  }));
}

void ChatApi::list_sessions(Call call) {
  auto user_id = caller(call);
  if (!user_id) return;
  auto limit = parse_limit(call->param("limit"), 50);
  if (!limit) return call->respond(error(Status::bad_request, "invalid_request", "limit must be from 1 to 200"));
  std::optional<store::SessionCursor> before;
  if (auto text = call->param("before"); text && !text->empty()) {
    before = parse_session_cursor(*text);
    if (!before) return call->respond(error(Status::bad_request, "invalid_request", "before must be a next_before of this list"));
  }
  store_.list_sessions(std::string(*user_id), *limit, std::move(before),
                       gate_.guard([call](boost::system::error_code ec, store::SessionPage page) {
                         if (ec) return call->respond(failure(ec, "sessions"));
                         call->respond(http::json_response(Status::ok, session_page_json(page)));
                       }));
}

void ChatApi::list_messages(Call call, std::string session_id) {
  auto user_id = caller(call);
  if (!user_id) return;
  auto limit = parse_limit(call->param("limit"), 50);
  if (!limit) return call->respond(error(Status::bad_request, "invalid_request", "limit must be from 1 to 200"));
  auto before = call->param("before").value_or("");
  if (!before.empty() && !is_valid_identifier(before))
    return call->respond(error(Status::bad_request, "invalid_request", "before must be a message id"));
  store_.list_messages(std::move(session_id), std::string(*user_id), *limit, std::string(before),
                       gate_.guard([call, max_bytes = options_.history_max_bytes](boost::system::error_code ec,
                                                                                  store::MessagePage page) {
                         if (ec) return call->respond(failure(hide_owner(ec), "session"));
                         call->respond(http::json_response(Status::ok, message_page_json(page, max_bytes)));
                       }));
}

void ChatApi::delete_session(Call call, std::string session_id) {
  auto user_id = caller(call);
  if (!user_id) return;
  store_.delete_session(session_id, std::string(*user_id),
                        gate_.guard([this, call, session_id, user = std::string(*user_id)](boost::system::error_code ec) {
                          if (ec) return call->respond(failure(hide_owner(ec), "session"));
                          log::info("session_deleted", {{"session_id", session_id}, {"correlation_id", call->correlation_id}});
                          pod_.end_session(session_id, user);
                          call->respond(
                              http::json_response(Status::ok, json::object{{"session_id", session_id}, {"deleted", true}}));
                        }));
}

http::Response ChatApi::health_response() const {
  auto health = pod_.health();
  http::Response res{health.draining ? Status::service_unavailable : Status::ok, 11};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::cache_control, "no-store");
  auto body = pod::to_json(health);
  body["auth_mode"] = options_.authenticator ? "jwt" : "none";
  res.body() = json::serialize(body);
  return res;
}

http::Response ChatApi::ready_response() const {
  auto health = pod_.health();
  return http::json_response(health.ready() ? Status::ok : Status::service_unavailable,
                             json::object{{"ready", health.ready()}, {"pod_id", health.pod_id}});
}

http::Response ChatApi::info_response() const {
  return http::json_response(
      Status::ok,
      json::object{{"service", "chatd"},
                   {"pod_id", pod_.id()},
                   {"auth_mode", options_.authenticator ? "jwt" : "none"},
                   {"limits", json::object{{"max_message_chars", options_.chat.max_message_chars},
                                           {"max_body_bytes", options_.max_body_bytes}}},
                   {"endpoints", json::array{"POST /api/chat", "POST /api/chat/{message_id}/cancel", "GET /api/sse?session_id=&user_id=",
                                             "POST /api/sessions", "GET /api/sessions?user_id=", "GET /api/sessions/{session_id}/messages?user_id=",
                                             "DELETE /api/sessions/{session_id}?user_id=", "GET /api/providers", "GET /api",
                                             "GET /health", "GET /ready", "GET /metrics", "GET /openapi.yaml"}}});
}

http::Response ChatApi::providers_response() const {
  json::array list;
  for (const auto& p : options_.providers) list.push_back(json::object{{"name", p.name}, {"default_model", p.default_model}});
  return http::json_response(Status::ok,
                             json::object{{"providers", std::move(list)}, {"default_provider", options_.default_provider}});
}

}  // namespace chat::api
