#include "chat/chat_request.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>

#include "common/identifier.hpp"

namespace json = boost::json;

namespace chat {
namespace {

ValidationError invalid(std::string message) { return {"invalid_request", std::move(message)}; }

bool is_blank(std::string_view s) {
  // Unicode whitespace beyond ASCII is rare in practice; ASCII blanks are what
  // clients send by accident.
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// Model names carry dots, colons and slashes ("llama3.1:8b", "org/model"), but
// no spaces or control characters.
bool is_valid_model(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

struct Reader {
  const json::object& obj;
  std::optional<ValidationError> error;

  std::optional<std::string_view> string(std::string_view key) {
    auto* v = obj.if_contains(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) {
      fail(std::string(key) + " must be a string");
      return std::nullopt;
    }
    return std::string_view(v->get_string());
  }
  void fail(std::string message) {
    if (!error) error = invalid(std::move(message));
  }
};

void read_context(const json::value& v, ChatRequest& out, Reader& in, const ChatLimits& limits) {
  if (v.is_null()) return;
  if (!v.is_object()) return in.fail("context must be an object");
  const auto& ctx = v.get_object();
  Reader c{ctx, std::nullopt};
  if (auto* t = ctx.if_contains("temperature"); t && !t->is_null()) {
    if (!t->is_number() || t->to_number<double>() < 0.0 || t->to_number<double>() > 2.0)
      c.fail("context.temperature must be a number from 0 to 2");
    else out.temperature = t->to_number<double>();
  }
  if (auto* m = ctx.if_contains("max_tokens"); m && !m->is_null()) {
    boost::system::error_code ec;
    auto n = m->to_number<std::int64_t>(ec);
    if (ec || n < 1 || n > 1'000'000) c.fail("context.max_tokens must be an integer from 1 to 1000000");
    else out.max_tokens = n;
  }
  if (auto sp = c.string("system_prompt")) {
    if (utf8_length(*sp) > limits.max_message_chars) c.fail("context.system_prompt is too long");
    else out.system_prompt = std::string(*sp);
  }
  if (c.error && !in.error) in.error = c.error;
}

}  // namespace

std::size_t utf8_length(std::string_view text) {
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](unsigned char c) { return (c & 0xC0) != 0x80; }));
}

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

ChatRequestResult parse_chat_request(std::string_view body, const ChatLimits& limits) {
  boost::system::error_code ec;
  auto root = json::parse(body, ec);
  if (ec) return {std::nullopt, ValidationError{"invalid_json", "the body is not valid JSON: " + ec.message()}};
  if (!root.is_object()) return {std::nullopt, ValidationError{"invalid_json", "the body must be a JSON object"}};
  Reader in{root.get_object(), std::nullopt};
  ChatRequest r;
  auto session_id = in.string("session_id");
  auto user_id = in.string("user_id");
  auto message = in.string("message");
  auto provider = in.string("ai_provider");
  auto model = in.string("model");
  if (in.error) return {std::nullopt, in.error};
  if (auto e = check_identifier("session_id", session_id)) return {std::nullopt, e};
  if (auto e = check_identifier("user_id", user_id)) return {std::nullopt, e};
  if (!message || message->empty()) return {std::nullopt, invalid("message is required")};
  if (is_blank(*message)) return {std::nullopt, invalid("message must not be empty")};
  if (utf8_length(*message) > limits.max_message_chars)
    return {std::nullopt, invalid("message is longer than " + std::to_string(limits.max_message_chars) + " characters")};
  if (provider && !provider->empty() && !is_valid_identifier(*provider))
    return {std::nullopt, invalid("ai_provider must be a provider name such as openai, anthropic or demo")};
  if (model && !model->empty() && !is_valid_model(*model))
    return {std::nullopt, invalid("model must be 1 to 128 printable characters without spaces")};
  r.session_id = *session_id;
  r.user_id = *user_id;
  r.message = *message;
  if (provider) r.ai_provider = *provider;
  if (model) r.model = *model;
  if (auto* ctx = root.get_object().if_contains("context")) read_context(*ctx, r, in, limits);
  if (in.error) return {std::nullopt, in.error};
  return {std::move(r), std::nullopt};
}

}  // namespace chat
