#include "store/spill_record.hpp"

#include <boost/json.hpp>

#include <cstdint>

#include "store/store_detail.hpp"

namespace chat::store {
namespace {

namespace json = boost::json;

// Bumped when the record changes shape; a journal outlives the program that wrote it.
constexpr std::int64_t kVersion = 1;

const json::string* string_at(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v != nullptr ? v->if_string() : nullptr;
}

// The record's JSON object, held in `value`; null when the line is not one.
const json::object* parse_record(std::string_view line, json::value& value) {
  json::parse_options options;
  options.allow_invalid_utf8 = true;  // the content is whatever the reply held
  boost::system::error_code ec;
  value = json::parse(line, ec, {}, options);
  return ec ? nullptr : value.if_object();
}

const std::int64_t* integer_at(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v != nullptr ? v->if_int64() : nullptr;
}

}  // namespace

std::string encode_spill_record(const AssistantMessage& m) {
  json::object o{{"v", kVersion},
                 {"message_id", m.message_id},
                 {"session_id", m.session_id},
                 {"content", m.content},
                 {"token_count", m.token_count},
                 {"status", m.status},
                 {"metadata", m.metadata_json},  // as text: kept byte for byte, checked by the database
                 {"created_at_us", detail::to_micros(m.created_at)}};
  if (!m.user_id.empty()) o["user_id"] = m.user_id;  // absent in records of earlier versions: not checked
  return json::serialize(o);
}

std::optional<AssistantMessage> decode_spill_record(std::string_view line) {
  json::value value;
  auto* o = parse_record(line, value);
  if (o == nullptr) return std::nullopt;
  auto* version = integer_at(*o, "v");
  auto* message_id = string_at(*o, "message_id");
  auto* session_id = string_at(*o, "session_id");
  auto* content = string_at(*o, "content");
  auto* tokens = integer_at(*o, "token_count");
  auto* status = string_at(*o, "status");
  auto* metadata = string_at(*o, "metadata");
  auto* created = integer_at(*o, "created_at_us");
  if (version == nullptr || *version != kVersion || !message_id || !session_id || !content || !tokens || !status ||
      !metadata || !created)
    return std::nullopt;
  auto* user = string_at(*o, "user_id");
  return AssistantMessage{std::string(*message_id), std::string(*session_id), std::string(*content), *tokens,
                          std::string(*status),     std::string(*metadata),   detail::from_micros(*created),
                          user ? std::string(*user) : std::string()};
}

bool is_newer_spill_record(std::string_view line) {
  json::value value;
  auto* o = parse_record(line, value);
  auto* version = o ? integer_at(*o, "v") : nullptr;
  return version != nullptr && *version > kVersion;
}

}  // namespace chat::store
