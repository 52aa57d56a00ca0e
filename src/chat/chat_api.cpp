#include "chat/chat_api.hpp"

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include <map>

#include "common/identifier.hpp"
#include "common/time.hpp"
#include "log/log.hpp"
#include "protocol/subjects.hpp"
#include "sse/events.hpp"

namespace json = boost::json;
namespace bhttp = boost::beast::http;

namespace chat {
namespace {

using http::Status;

constexpr std::string_view kVersion = "0.1.0";

http::Response error(Status status, std::string_view code, std::string_view message) {
  return http::error_response(status, code, message);
}

http::Response unavailable(std::string_view message) {
  auto res = error(Status::service_unavailable, "unavailable", message);
  res.set(bhttp::field::retry_after, "2");
  return res;
}

// The answer to a failed store call.
http::Response store_error(boost::system::error_code ec, std::string_view what) {
  if (ec == store::Errc::forbidden) return error(Status::forbidden, "forbidden", "this session belongs to another user");
  if (ec == store::Errc::not_found) return error(Status::not_found, "not_found", std::string(what) + " not found");
  return unavailable("the message store is unavailable; try again shortly");
}

std::string rfc3339(SystemTime t) { return to_rfc3339(t); }

json::object session_json(const store::SessionSummary& s) {
  return {{"session_id", s.session_id},           {"user_id", s.user_id},
          {"title", s.title},                     {"ai_provider", s.ai_provider},
          {"model", s.model_name},                {"created_at", rfc3339(s.created_at)},
          {"updated_at", rfc3339(s.updated_at)},  {"last_message_at", rfc3339(s.last_message_at)}};
}

json::object message_json(const store::StoredMessage& m) {
  json::object o{{"message_id", m.message_id}, {"session_id", m.session_id}, {"role", m.role},
                 {"content", m.content},       {"token_count", m.token_count}, {"status", m.status},
                 {"created_at", rfc3339(m.created_at)}};
  boost::system::error_code ec;
  auto meta = json::parse(m.metadata_json, ec);
  o["metadata"] = ec ? json::value(json::object{}) : std::move(meta);
  return o;
}

std::optional<std::size_t> parse_limit(std::string_view text, std::size_t fallback) {
  if (text.empty()) return fallback;
  std::size_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9' || n > 1'000'000) return std::nullopt;
    n = n * 10 + static_cast<std::size_t>(c - '0');
  }
  if (n < 1 || n > 200) return std::nullopt;
  return n;
}

}  // namespace

struct ChatApi::Call {
  http::Request request;
  std::shared_ptr<http::HttpSession> session;
  std::string path;
  std::map<std::string, std::string, std::less<>> query;
  std::string correlation_id;
  std::string origin;
  ChatApi* api = nullptr;

  std::string_view param(std::string_view key) const {
    auto it = query.find(key);
    return it == query.end() ? std::string_view{} : std::string_view(it->second);
  }
  std::optional<std::string_view> param_opt(std::string_view key) const {
    auto it = query.find(key);
    if (it == query.end()) return std::nullopt;
    return std::string_view(it->second);
  }

  void respond(http::Response res) {
    res.set("X-Correlation-ID", correlation_id);
    auto allowed = api->cors_origin(origin);
    if (!allowed.empty()) {
      res.set(bhttp::field::access_control_allow_origin, allowed);
      if (allowed != "*") res.set(bhttp::field::vary, "Origin");
    }
    session->respond(std::move(res));
  }
};

ChatApi::ChatApi(const config::Config& config, Pod& pod, bus::MessageBus& bus, registry::SessionRegistry& registry,
                 store::MessageStore& store)
    : config_(config), pod_(pod), bus_(bus), registry_(registry), store_(store),
      chat_limits_{config.chat.max_message_chars} {}

std::string ChatApi::cors_origin(std::string_view request_origin) const {
  const auto& allowed = config_.server.cors_origins;
  if (allowed == "*") return "*";
  if (request_origin.empty()) return {};
  std::string_view list = allowed;
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item == request_origin) return std::string(request_origin);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
  return {};
}

void ChatApi::decorate(http::Response& response) {
  auto allowed = cors_origin({});
  if (!allowed.empty()) response.set(bhttp::field::access_control_allow_origin, allowed);
}

void ChatApi::handle(http::Request request, std::shared_ptr<http::HttpSession> session) {
  auto call = std::make_shared<Call>();
  call->api = this;
  call->session = std::move(session);
  auto cid = request["X-Correlation-ID"];
  call->correlation_id = is_valid_identifier(cid) ? std::string(cid) : new_identifier("corr_");
  call->origin = std::string(request[bhttp::field::origin]);
  auto target = boost::urls::parse_origin_form(request.target());
  if (!target) {
    call->request = std::move(request);
    return call->respond(error(Status::bad_request, "invalid_request", "the request target is not a valid URL"));
  }
  call->path = std::string(target->encoded_path());
  for (auto param : target->params()) call->query.emplace(param.key, param.value);
  call->request = std::move(request);

  if (call->request.method() == bhttp::verb::options) {
    http::Response res{Status::no_content, 11};
    res.set(bhttp::field::access_control_allow_methods, "GET, POST, DELETE, OPTIONS");
    res.set(bhttp::field::access_control_allow_headers, "Content-Type, Authorization, Last-Event-ID, X-Correlation-ID");
    res.set(bhttp::field::access_control_max_age, "86400");
    return call->respond(std::move(res));
  }
  route(std::move(call));
}

void ChatApi::route(std::shared_ptr<Call> call) {
  const std::string_view path = call->path;
  const auto method = call->request.method();
  // True when the method fits; otherwise answers 405 with the allowed ones.
  auto allow = [&](bhttp::verb wanted, std::string_view allow_header) {
    if (method == wanted || (wanted == bhttp::verb::get && method == bhttp::verb::head)) return true;
    auto res = error(Status::method_not_allowed, "method_not_allowed",
                     std::string(bhttp::to_string(method)) + " is not allowed on " + std::string(path));
    res.set(bhttp::field::allow, allow_header);
    call->respond(std::move(res));
    return false;
  };
  if (path == "/") {
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(info_response());
  } else if (path == "/health") {
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(health_response());
  } else if (path == "/ready") {
    if (allow(bhttp::verb::get, "GET, OPTIONS")) call->respond(ready_response());
  } else if (path == "/api/chat") {
    if (allow(bhttp::verb::post, "POST, OPTIONS")) post_chat(std::move(call));
  } else if (path.starts_with("/api/chat/") && path.ends_with("/cancel") && path != "/api/chat/cancel") {
    auto id = path.substr(std::string_view("/api/chat/").size());
    id.remove_suffix(std::string_view("/cancel").size());
    if (!is_valid_identifier(id))
      return call->respond(error(Status::bad_request, "invalid_request", "message_id must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'"));
    if (allow(bhttp::verb::post, "POST, OPTIONS")) cancel_reply(std::move(call), std::string(id));
  } else if (path == "/api/sse") {
    if (allow(bhttp::verb::get, "GET, OPTIONS")) open_stream(std::move(call));
  } else if (path == "/api/sessions") {
    if (allow(bhttp::verb::get, "GET, OPTIONS")) list_sessions(std::move(call));
  } else if (path.starts_with("/api/sessions/")) {
    auto rest = path.substr(std::string_view("/api/sessions/").size());
    constexpr std::string_view kMessages = "/messages";
    bool messages = rest.ends_with(kMessages);
    if (messages) rest.remove_suffix(kMessages.size());
    if (!is_valid_identifier(rest))
      return call->respond(error(Status::bad_request, "invalid_request", "session_id must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'"));
    if (messages) {
      if (allow(bhttp::verb::get, "GET, OPTIONS")) list_messages(std::move(call), std::string(rest));
    } else if (allow(bhttp::verb::delete_, "DELETE, OPTIONS")) {
      delete_session(std::move(call), std::string(rest));
    }
  } else {
    call->respond(error(Status::not_found, "not_found", "no such resource: " + std::string(path)));
  }
}

void ChatApi::post_chat(std::shared_ptr<Call> call) {
  auto content_type = call->request[bhttp::field::content_type];
  if (!is_json_content_type(content_type))
    return call->respond(error(Status::unsupported_media_type, "unsupported_media_type",
                               "Content-Type must be application/json"));
  auto parsed = parse_chat_request(call->request.body(), chat_limits_);
  if (parsed.error) {
    log::info("chat_rejected", {{"reason", parsed.error->message}, {"correlation_id", call->correlation_id}});
    return call->respond(error(Status::bad_request, parsed.error->code, parsed.error->message));
  }
  if (draining_) return call->respond(unavailable("this pod is shutting down"));
  // Nothing half-done: with the bus down, not even the user message is stored.
  if (!bus_.connected()) return call->respond(unavailable("the message bus is unreachable; try again shortly"));

  auto request = std::move(*parsed.request);
  store::NewUserMessage user{request.session_id, request.user_id, new_identifier("msg_"), request.message,
                             request.ai_provider.empty() ? config_.worker.default_provider : request.ai_provider,
                             request.model, std::chrono::system_clock::now()};
  auto user_message_id = user.message_id;
  store_.accept_user_message(
      std::move(user), config_.chat.history_turns,
      [this, call, request = std::move(request), user_message_id](boost::system::error_code ec,
                                                                 std::vector<protocol::HistoryEntry> history) mutable {
        if (ec) {
          log::warn("chat_not_accepted", {{"session_id", request.session_id}, {"error", ec.message()},
                                          {"correlation_id", call->correlation_id}});
          return call->respond(store_error(ec, "session"));
        }
        publish_request(std::move(call), std::move(request), std::move(user_message_id), std::move(history));
      });
}

void ChatApi::publish_request(std::shared_ptr<Call> call, ChatRequest request, std::string user_message_id,
                              std::vector<protocol::HistoryEntry> history) {
  protocol::WorkflowRequest work;
  work.message_id = new_identifier("msg_");
  work.session_id = request.session_id;
  work.user_id = request.user_id;
  work.message = std::move(request.message);
  work.context.ai_provider = std::move(request.ai_provider);
  work.context.model = std::move(request.model);
  work.context.temperature = request.temperature;
  work.context.max_tokens = request.max_tokens;
  work.context.system_prompt = std::move(request.system_prompt);
  work.context.conversation_history = std::move(history);
  work.timestamp = rfc3339_now();
  work.correlation_id = call->correlation_id;
  // Keep the reply's chunks here even if no stream is open yet (late join, and
  // the reply must be stored when nobody watches).
  pod_.hub().expect(work.session_id, work.message_id);
  auto accepted = json::object{{"message_id", work.message_id},
                               {"session_id", work.session_id},
                               {"status", "accepted"},
                               {"timestamp", work.timestamp},
                               {"correlation_id", work.correlation_id}};
  auto subject = subjects::execute(work.session_id);
  bus_.publish(std::move(subject), protocol::encode(work),
               [this, call, accepted = std::move(accepted), user_message_id](boost::system::error_code ec) {
                 if (!ec) {
                   log::info("chat_accepted", {{"message_id", accepted.at("message_id").as_string()},
                                               {"session_id", accepted.at("session_id").as_string()},
                                               {"correlation_id", call->correlation_id}});
                   return call->respond(http::json_response(Status::accepted, accepted));
                 }
                 log::warn("chat_publish_failed", {{"error", ec.message()}, {"correlation_id", call->correlation_id}});
                 store_.discard_message(user_message_id, [](boost::system::error_code) {});
                 call->respond(unavailable("the message bus is unreachable; try again shortly"));
               });
}

void ChatApi::open_stream(std::shared_ptr<Call> call) {
  auto session_id = call->param_opt("session_id");
  auto user_id = call->param_opt("user_id");
  if (auto e = check_identifier("session_id", session_id)) return call->respond(error(Status::bad_request, e->code, e->message));
  if (auto e = check_identifier("user_id", user_id)) return call->respond(error(Status::bad_request, e->code, e->message));
  if (draining_) return call->respond(unavailable("this pod is shutting down"));
  // EventSource sends Last-Event-ID on reconnect; a query parameter serves
  // clients that cannot set headers. A malformed cursor is ignored.
  auto last_event = call->request["Last-Event-ID"];
  std::string cursor_text = !last_event.empty() ? std::string(last_event) : std::string(call->param("last_event_id"));
  auto cursor = parse_last_event_id(cursor_text);
  store_.session_owner(std::string(*session_id), [this, call, session = std::string(*session_id), cursor,
                                                  user = std::string(*user_id)](boost::system::error_code ec,
                                                                                std::optional<std::string> owner) {
    if (ec) return call->respond(store_error(ec, "session"));
    if (owner && *owner != user) return call->respond(error(Status::forbidden, "forbidden", "this session belongs to another user"));
    auto head = sse::stream_head(cors_origin(call->origin));
    call->session->upgrade([this, call, session, cursor, head = std::move(head)](http::HttpSession::Socket socket) mutable {
      auto connection = std::make_shared<sse::SseConnection>(
          std::move(socket), new_identifier("conn_"), session,
          sse::QueueLimits{config_.sse.max_queue_events, config_.sse.max_queue_bytes, 512 * 1024, config_.sse.stall_grace});
      std::vector<sse::Frame> first{sse::retry_frame(config_.sse.retry),
                                    sse::connected_frame(connection->id(), session, pod_.id())};
      connection->start(std::move(head), std::move(first),
                        [this](const std::shared_ptr<sse::SseConnection>& c, std::string_view reason) {
                          pod_.hub().detach(c, reason);
                        });
      registry_.add({session, pod_.id(), connection->id()});
      log::info("sse_connected", {{"connection_id", connection->id()}, {"session_id", session},
                                  {"resume", cursor.has_value()}, {"correlation_id", call->correlation_id}});
      pod_.hub().attach(std::move(connection), cursor);
    });
  });
}

void ChatApi::cancel_reply(std::shared_ptr<Call> call, std::string message_id) {
  // The caller names itself in the query or in a JSON body.
  std::optional<std::string> user_id;
  if (auto q = call->param_opt("user_id")) user_id = std::string(*q);
  if (!user_id && !call->request.body().empty()) {
    boost::system::error_code ec;
    auto body = json::parse(call->request.body(), ec);
    if (ec || !body.is_object())
      return call->respond(error(Status::bad_request, "invalid_json", "the body must be a JSON object"));
    if (auto* u = body.get_object().if_contains("user_id"); u && u->is_string()) user_id = std::string(u->get_string());
  }
  if (auto e = check_identifier("user_id", user_id ? std::optional<std::string_view>(*user_id) : std::nullopt))
    return call->respond(error(Status::bad_request, e->code, e->message));
  if (!bus_.connected()) return call->respond(unavailable("the message bus is unreachable; try again shortly"));
  protocol::CancelRequest cancel{message_id, std::string(call->param("session_id")), *user_id};
  if (!cancel.session_id.empty() && !is_valid_identifier(cancel.session_id))
    return call->respond(error(Status::bad_request, "invalid_request", "session_id must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'"));
  // The worker running the reply answers; silence means no such reply is running.
  bus_.request(subjects::cancel(message_id), protocol::encode(cancel), std::chrono::seconds{2},
               [call, message_id](boost::system::error_code ec, std::string reply) {
                 if (ec) return call->respond(error(Status::not_found, "not_found", "no running reply with this message_id"));
                 boost::system::error_code parse_ec;
                 auto v = json::parse(reply, parse_ec);
                 auto* status = !parse_ec && v.is_object() ? v.get_object().if_contains("status") : nullptr;
                 if (status && status->is_string() && status->get_string() == "forbidden")
                   return call->respond(error(Status::forbidden, "forbidden", "this reply belongs to another user"));
                 log::info("cancel_requested", {{"message_id", message_id}, {"correlation_id", call->correlation_id}});
                 call->respond(http::json_response(Status::accepted,
                                                   json::object{{"message_id", message_id}, {"status", "cancelling"}}));
               });
}

void ChatApi::list_sessions(std::shared_ptr<Call> call) {
  auto user_id = call->param_opt("user_id");
  if (auto e = check_identifier("user_id", user_id)) return call->respond(error(Status::bad_request, e->code, e->message));
  auto limit = parse_limit(call->param("limit"), 50);
  if (!limit) return call->respond(error(Status::bad_request, "invalid_request", "limit must be from 1 to 200"));
  store_.list_sessions(std::string(*user_id), *limit, [call](boost::system::error_code ec, std::vector<store::SessionSummary> list) {
    if (ec) return call->respond(store_error(ec, "sessions"));
    json::array out;
    for (const auto& s : list) out.push_back(session_json(s));
    call->respond(http::json_response(Status::ok, json::object{{"sessions", std::move(out)}}));
  });
}

void ChatApi::list_messages(std::shared_ptr<Call> call, std::string session_id) {
  auto user_id = call->param_opt("user_id");
  if (auto e = check_identifier("user_id", user_id)) return call->respond(error(Status::bad_request, e->code, e->message));
  auto limit = parse_limit(call->param("limit"), 50);
  if (!limit) return call->respond(error(Status::bad_request, "invalid_request", "limit must be from 1 to 200"));
  auto before = call->param("before");
  if (!before.empty() && !is_valid_identifier(before))
    return call->respond(error(Status::bad_request, "invalid_request", "before must be a message id"));
  store_.list_messages(std::move(session_id), std::string(*user_id), *limit, std::string(before),
                       [call](boost::system::error_code ec, store::MessagePage page) {
                         if (ec) return call->respond(store_error(ec, "session"));
                         json::array out;
                         for (const auto& m : page.messages) out.push_back(message_json(m));
                         json::value next = page.next_before ? json::value(*page.next_before) : json::value(nullptr);
                         call->respond(http::json_response(
                             Status::ok, json::object{{"messages", std::move(out)}, {"next_before", std::move(next)}}));
                       });
}

void ChatApi::delete_session(std::shared_ptr<Call> call, std::string session_id) {
  auto user_id = call->param_opt("user_id");
  if (auto e = check_identifier("user_id", user_id)) return call->respond(error(Status::bad_request, e->code, e->message));
  store_.delete_session(session_id, std::string(*user_id), [this, call, session_id, user = std::string(*user_id)](
                                                               boost::system::error_code ec) {
    if (ec) return call->respond(store_error(ec, "session"));
    log::info("session_deleted", {{"session_id", session_id}, {"correlation_id", call->correlation_id}});
    // Its streams here end, and the replies still running for it stop.
    pod_.hub().end_session(session_id, [this, session_id, user](std::vector<std::string> running) {
      for (const auto& message_id : running)
        bus_.publish(subjects::cancel(message_id), protocol::encode(protocol::CancelRequest{message_id, session_id, user}));
    });
    call->respond(http::json_response(Status::ok, json::object{{"session_id", session_id}, {"deleted", true}}));
  });
}

bool ChatApi::dependencies_up() const { return bus_.connected() && registry_.connected() && store_.connected(); }

std::string ChatApi::health_json() const {
  auto stats = pod_.hub().stats();
  bool embedded = bus_.kind() == "memory" && registry_.kind() == "memory" && store_.kind() == "sqlite";
  bool distributed = bus_.kind() == "nats" && registry_.kind() == "redis" && store_.kind() == "postgres";
  json::object o;
  o["status"] = draining_ ? "draining" : dependencies_up() ? "healthy" : "degraded";
  o["pod_id"] = pod_.id();
  o["timestamp"] = unix_now();
  o["active_connections"] = stats.connections;
  o["active_sessions"] = stats.sessions;
  o["active_buffers"] = stats.buffers;
  o["nats_connected"] = bus_.kind() == "nats" && bus_.connected();
  o["redis_connected"] = registry_.kind() == "redis" && registry_.connected();
  o["db_connected"] = store_.connected();
  o["mode"] = embedded ? "embedded" : distributed ? "distributed" : "mixed";
  o["components"] = json::object{{"bus", bus_.kind()}, {"bus_connected", bus_.connected()},
                                 {"registry", registry_.kind()}, {"registry_connected", registry_.connected()},
                                 {"store", store_.kind()}};
  o["uptime_seconds"] = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count();
  o["version"] = kVersion;
  return json::serialize(o);
}

http::Response ChatApi::health_response() const {
  http::Response res{draining_ ? Status::service_unavailable : Status::ok, 11};
  res.set(bhttp::field::content_type, "application/json");
  res.set(bhttp::field::cache_control, "no-store");
  res.body() = health_json();
  return res;
}

http::Response ChatApi::ready_response() const {
  bool ready = !draining_ && bus_.connected() && store_.connected();
  return http::json_response(ready ? Status::ok : Status::service_unavailable,
                             json::object{{"ready", ready}, {"pod_id", pod_.id()}});
}

http::Response ChatApi::info_response() const {
  return http::json_response(
      Status::ok,
      json::object{{"service", "chatd"},
                   {"version", kVersion},
                   {"pod_id", pod_.id()},
                   {"endpoints", json::array{"POST /api/chat", "POST /api/chat/{message_id}/cancel", "GET /api/sse?session_id=&user_id=",
                                             "GET /api/sessions?user_id=", "GET /api/sessions/{session_id}/messages?user_id=",
                                             "DELETE /api/sessions/{session_id}?user_id=", "GET /health", "GET /ready"}}});
}

}  // namespace chat
