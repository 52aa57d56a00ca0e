#include "api/chat_request.hpp"

#include <boost/json.hpp>

#include <algorithm>

#include "common/identifier.hpp"
#include "common/utf8.hpp"
#include "protocol/json_fields.hpp"

namespace json = boost::json;

namespace chat::api {
namespace {

ValidationError invalid(std::string message) { return {"invalid_request", std::move(message)}; }

void read_context(const json::object& ctx, pod::ChatRequest& out, const ChatLimits& limits, std::string& error) {
  protocol::JsonFields c(ctx, error, "context.");
  out.temperature = c.number("temperature", 0.0, 2.0);
  out.max_tokens = c.integer("max_tokens", 1, 1'000'000);
  if (auto sp = c.text("system_prompt")) {
    if (utf8_length(*sp) > limits.max_message_chars) c.fail("context.system_prompt is too long");
    else out.system_prompt = std::string(*sp);
  }
}

}  // namespace

bool is_json_content_type(std::string_view ct) {
  auto semi = ct.find(';');
  auto type = ct.substr(0, semi);
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  while (!type.empty() && type.front() == ' ') type.remove_prefix(1);
  static constexpr std::string_view kJson = "application/json";
  return type.size() == kJson.size() && std::equal(type.begin(), type.end(), kJson.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == b;
         });
}

std::optional<ValidationError> check_identifier(std::string_view field, std::optional<std::string_view> value) {
  if (!value || value->empty()) return invalid(std::string(field) + " is required");
  if (!is_valid_identifier(*value))
    return invalid(std::string(field) + " must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'");
  return std::nullopt;
}

ChatRequestResult parse_chat_request(std::string_view body, const ChatLimits& limits, bool user_id_required) {
  boost::system::error_code ec;
  auto root = json::parse(body, ec);
  if (ec) return {std::nullopt, ValidationError{"invalid_json", "the body is not valid JSON: " + ec.message()}};
  if (!root.is_object()) return {std::nullopt, ValidationError{"invalid_json", "the body must be a JSON object"}};
  std::string problem;
  protocol::JsonFields in(root.get_object(), problem);
  auto invalid_field = [&] { return ChatRequestResult{std::nullopt, invalid(std::move(problem))}; };
  pod::ChatRequest r;
  auto session_id = in.text("session_id");
  auto user_id = in.text("user_id");
  auto message = in.text("message");
  auto provider = in.text("ai_provider");
  auto model = in.text("model");
  if (!in.ok()) return invalid_field();
  if (auto e = check_identifier("session_id", session_id)) return {std::nullopt, e};
  if (user_id_required || (user_id && !user_id->empty()))
    if (auto e = check_identifier("user_id", user_id)) return {std::nullopt, e};
  if (!message || message->empty()) return {std::nullopt, invalid("message is required")};
  if (utf8_is_blank(*message)) return {std::nullopt, invalid("message must not be empty")};
  if (utf8_length(*message) > limits.max_message_chars)
    return {std::nullopt, invalid("message is longer than " + std::to_string(limits.max_message_chars) + " characters")};
  if (provider && !provider->empty() && !is_valid_identifier(*provider))
    return {std::nullopt, invalid("ai_provider must be a provider name such as openai, anthropic or demo")};
  if (model && !model->empty() && !is_valid_model_name(*model))
    return {std::nullopt, invalid("model must be 1 to 128 printable characters without spaces")};
  r.session_id = *session_id;
  if (user_id) r.user_id = *user_id;
  r.message = *message;
  if (provider) r.ai_provider = *provider;
  if (model) r.model = *model;
  if (auto* ctx = in.object("context")) read_context(*ctx, r, limits, problem);
  if (!in.ok()) return invalid_field();
  return {std::move(r), std::nullopt};
}

}  // namespace chat::api
