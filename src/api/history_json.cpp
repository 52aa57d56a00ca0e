#include "api/history_json.hpp"

#include <boost/json/parse.hpp>

#include "common/time.hpp"

namespace json = boost::json;

namespace chat::api {

json::object session_json(const store::SessionSummary& s) {
  return {{"session_id", s.session_id},              {"user_id", s.user_id},
          {"title", s.title},                        {"ai_provider", s.ai_provider},
          {"model", s.model_name},                   {"created_at", to_rfc3339(s.created_at)},
          {"updated_at", to_rfc3339(s.updated_at)},  {"last_message_at", to_rfc3339(s.last_message_at)}};
}

json::object message_json(const store::StoredMessage& m) {
  json::object o{{"message_id", m.message_id}, {"session_id", m.session_id},   {"role", m.role},
                 {"content", m.content},       {"token_count", m.token_count}, {"status", m.status},
                 {"created_at", to_rfc3339(m.created_at)}};
  boost::system::error_code ec;
  auto meta = json::parse(m.metadata_json, ec);
  o["metadata"] = ec ? json::value(json::object{}) : std::move(meta);
  return o;
}

}  // namespace chat::api
