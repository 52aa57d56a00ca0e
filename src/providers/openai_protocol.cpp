#include "providers/openai_protocol.hpp"
#include "providers/json_fields.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace json = boost::json;

namespace chat::providers {
namespace {

ProviderFailure bad_response(std::string message) {
  return {std::string(provider_code::kBadResponse), std::move(message), false, std::nullopt};
}

}  // namespace

http_client::HttpHeaders OpenAiProtocol::auth_headers(const std::string& api_key) const {
  return {{"Authorization", "Bearer " + api_key}};
}

std::string OpenAiProtocol::body(const protocol::WorkflowRequest& request, const std::string& model) const {
  const auto& ctx = request.context;
  json::array messages;
  if (!ctx.system_prompt.empty()) messages.push_back(json::object{{"role", "system"}, {"content", ctx.system_prompt}});
  for (const auto& h : ctx.conversation_history) messages.push_back(json::object{{"role", h.role}, {"content", h.content}});
  messages.push_back(json::object{{"role", "user"}, {"content", request.message}});
  json::object body{{"model", model},
                    {"messages", std::move(messages)},
                    {"stream", true},
                    {"stream_options", json::object{{"include_usage", true}}}};
  if (ctx.temperature) body["temperature"] = *ctx.temperature;
  // max_tokens, not max_completion_tokens: the compatible servers know this one.
  if (ctx.max_tokens) body["max_tokens"] = *ctx.max_tokens;
  return json::serialize(body);
}

std::optional<StreamEnd> OpenAiDecoder::on_event(const http_client::StreamEvent& event, std::string& text) {
  if (event.data == "[DONE]") return end_from_finish_reason();
  boost::system::error_code ec;
  auto value = json::parse(event.data, ec);
  const json::object* obj = ec ? nullptr : value.if_object();
  if (!obj) return StreamEnd{"", bad_response("OpenAI sent an event that is not a JSON object")};

  // Compatible servers report failures inside the stream: {"error": {...}}.
  if (auto it = obj->find("error"); it != obj->end() && !it->value().is_null()) {
    std::string message;
    if (auto* e = it->value().if_object()) message = string_at(*e, "message");
    else if (auto* s = it->value().if_string()) message = *s;
    return StreamEnd{"", ProviderFailure{std::string(provider_code::kError),
                                         "OpenAI reported an error mid-stream" + (message.empty() ? "" : ": " + message),
                                         false, std::nullopt}};
  }
  if (model_.empty()) model_ = string_at(*obj, "model");
  if (auto* usage = object_at(*obj, "usage")) {
    if (auto n = count_at(*usage, "completion_tokens")) tokens_ = *n;
  }
  // The usage event has "choices": []; the first has a role-only delta.
  if (auto it = obj->find("choices"); it != obj->end()) {
    auto* choices = it->value().if_array();
    if (!choices) return StreamEnd{"", bad_response("OpenAI sent \"choices\" that is not an array")};
    for (const auto& c : *choices) {
      auto* choice = c.if_object();
      if (!choice) continue;
      if (auto index = int_at(*choice, "index"); index && *index != 0) continue;  // we ask for n=1
      if (auto* delta = object_at(*choice, "delta")) {
        text.append(string_at(*delta, "content"));
        text.append(string_at(*delta, "refusal"));  // a refusal is the reply the user gets
      }
      if (auto reason = string_at(*choice, "finish_reason"); !reason.empty()) finish_reason_ = reason;
    }
  }
  return std::nullopt;
}

StreamEnd OpenAiDecoder::on_body_end() {
  // Some compatible servers close without "[DONE]"; a finish_reason is enough.
  if (!finish_reason_.empty()) return end_from_finish_reason();
  ProviderFailure f = bad_response("OpenAI's stream ended before the reply was complete");
  f.retryable = true;  // only acted on when no text went out yet
  return StreamEnd{"", std::move(f)};
}

StreamEnd OpenAiDecoder::end_from_finish_reason() const {
  if (finish_reason_ == "length") return StreamEnd{"length", std::nullopt};
  if (finish_reason_ == "content_filter")
    return StreamEnd{"", ProviderFailure{std::string(provider_code::kContentFiltered),
                                         "OpenAI's content filter stopped the reply", false, std::nullopt}};
  return StreamEnd{"stop", std::nullopt};
}

}  // namespace chat::providers
