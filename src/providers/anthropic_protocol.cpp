#include "providers/anthropic_protocol.hpp"
#include "providers/json_fields.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>

namespace json = boost::json;

namespace chat::providers {
namespace {

void append_paragraph(std::string& to, std::string_view text) {
  if (!to.empty()) to += "\n\n";
  to += text;
}

}  // namespace

http_client::HttpHeaders AnthropicProtocol::auth_headers(const std::string& api_key) const {
  return {{"x-api-key", api_key}, {"anthropic-version", version_}};
}

std::string AnthropicProtocol::body(const protocol::WorkflowRequest& request, const std::string& model) const {
  const auto& ctx = request.context;
  std::string system = ctx.system_prompt;
  std::vector<std::pair<std::string, std::string>> turns;  // role, content
  auto add = [&](const std::string& role, std::string_view content) {
    if (content.empty()) return;
    if (turns.empty() && role == "assistant") return;
    if (!turns.empty() && turns.back().first == role) append_paragraph(turns.back().second, content);
    else turns.emplace_back(role, std::string(content));
  };
  for (const auto& h : ctx.conversation_history) {
    if (h.role == "system") append_paragraph(system, h.content);
    else add(h.role == "assistant" ? "assistant" : "user", h.content);
  }
  add("user", request.message);
  // The API needs a final user turn; only an empty message (chatd never
  // sends one) can leave it out.
  if (turns.empty() || turns.back().first != "user") turns.emplace_back("user", "(empty message)");
  json::array messages;
  for (auto& [role, content] : turns) messages.push_back(json::object{{"role", role}, {"content", std::move(content)}});

  json::object body{{"model", model},
                    {"max_tokens", ctx.max_tokens.value_or(kAnthropicDefaultMaxTokens)},
                    {"messages", std::move(messages)},
                    {"stream", true}};
  if (!system.empty()) body["system"] = system;
  if (ctx.temperature) body["temperature"] = std::clamp(*ctx.temperature, 0.0, 1.0);
  return json::serialize(body);
}

ProviderFailure anthropic_failure(std::string_view type, std::string_view message) {
  ProviderFailure f;
  f.message = "Anthropic error";
  if (!type.empty()) f.message += " (" + std::string(type) + ")";
  if (!message.empty()) f.message += ": " + std::string(message);
  if (type == "overloaded_error" || type == "api_error") {
    f.code = provider_code::kUnavailable;
    f.retryable = true;
  } else if (type == "rate_limit_error") {
    f.code = provider_code::kRateLimited;
    f.retryable = true;
  } else if (type == "authentication_error" || type == "permission_error") {
    f.code = provider_code::kAuthFailed;
  } else if (type == "not_found_error") {
    f.code = provider_code::kModelNotFound;
  } else if (type == "timeout_error") {
    f.code = provider_code::kTimeout;
    f.retryable = true;
  } else {
    f.code = provider_code::kError;  // invalid_request_error, request_too_large, unknown types
  }
  return f;
}

std::optional<StreamEnd> AnthropicDecoder::on_event(const http_client::StreamEvent& event, std::string& text) {
  boost::system::error_code ec;
  auto value = json::parse(event.data, ec);
  const json::object* obj = ec ? nullptr : value.if_object();
  if (!obj)
    return StreamEnd{"", ProviderFailure{std::string(provider_code::kBadResponse),
                                         "Anthropic sent an event that is not a JSON object", false, std::nullopt}};
  std::string_view type = string_at(*obj, "type");
  if (type.empty()) type = event.type;

  if (type == "content_block_delta") {
    if (auto* delta = object_at(*obj, "delta"); delta && string_at(*delta, "type") == "text_delta")
      text.append(string_at(*delta, "text"));
    // input_json_delta, thinking_delta, signature_delta: not reply text.
  } else if (type == "content_block_start") {
    if (auto* block = object_at(*obj, "content_block"); block && string_at(*block, "type") == "text")
      text.append(string_at(*block, "text"));  // normally empty
  } else if (type == "message_start") {
    if (auto* message = object_at(*obj, "message")) {
      model_ = string_at(*message, "model");
      if (auto* usage = object_at(*message, "usage")) {
        input_tokens_ = count_at(*usage, "input_tokens");
        if (auto n = count_at(*usage, "output_tokens")) output_tokens_ = n;
      }
    }
  } else if (type == "message_delta") {
    if (auto* delta = object_at(*obj, "delta")) {
      if (auto reason = string_at(*delta, "stop_reason"); !reason.empty()) stop_reason_ = reason;
    }
    if (auto* usage = object_at(*obj, "usage")) {
      if (auto n = count_at(*usage, "output_tokens")) output_tokens_ = n;
    }
  } else if (type == "message_stop") {
    return end_from_stop_reason();
  } else if (type == "error") {
    const json::object* error = object_at(*obj, "error");
    return StreamEnd{"", anthropic_failure(error ? string_at(*error, "type") : "", error ? string_at(*error, "message") : "")};
  }
  // ping, content_block_stop and event types added later: nothing to do.
  return std::nullopt;
}

StreamEnd AnthropicDecoder::on_body_end() {
  if (!stop_reason_.empty()) return end_from_stop_reason();
  ProviderFailure f{std::string(provider_code::kBadResponse), "Anthropic's stream ended before the reply was complete",
                    true, std::nullopt};
  return StreamEnd{"", std::move(f)};
}

StreamEnd AnthropicDecoder::end_from_stop_reason() const {
  if (stop_reason_ == "max_tokens" || stop_reason_ == "model_context_window_exceeded") return StreamEnd{"length", std::nullopt};
  if (stop_reason_ == "refusal")
    return StreamEnd{"", ProviderFailure{std::string(provider_code::kContentFiltered),
                                         "Anthropic's safety filter stopped the reply", false, std::nullopt}};
  return StreamEnd{"stop", std::nullopt};  // end_turn, stop_sequence, tool_use, pause_turn
}

}  // namespace chat::providers
