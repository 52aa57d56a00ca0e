#include "api/history_json.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <charconv>

#include "common/identifier.hpp"
#include "common/time.hpp"

namespace json = boost::json;

namespace chat::api {

json::object session_json(const store::SessionSummary& s) {
  return {{"session_id", s.session_id},              {"user_id", s.user_id},
          {"title", s.title},                        {"ai_provider", s.ai_provider},
          {"model", s.model_name},                   {"created_at", to_rfc3339(s.created_at)},
          {"updated_at", to_rfc3339(s.updated_at)},  {"last_message_at", to_rfc3339(s.last_message_at)}};
}

std::string to_text(const store::SessionCursor& cursor) {
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(cursor.last_message_at.time_since_epoch());
  return std::to_string(micros.count()) + "." + cursor.session_id;
}

std::optional<store::SessionCursor> parse_session_cursor(std::string_view text) {
  auto dot = text.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  auto digits = text.substr(0, dot), id = text.substr(dot + 1);
  std::int64_t micros = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), micros);
  // Past the clock's range (year 2262 in nanoseconds) no time converts.
  constexpr auto kLatest = std::chrono::duration_cast<std::chrono::microseconds>(SystemTime::duration::max()).count();
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || micros < 0 || micros > kLatest ||
      !is_valid_identifier(id))
    return std::nullopt;
  return store::SessionCursor{SystemTime{std::chrono::duration_cast<SystemTime::duration>(std::chrono::microseconds{micros})},
                              std::string(id)};
}

json::object session_page_json(const store::SessionPage& page) {
  json::array sessions;
  for (const auto& s : page.sessions) sessions.push_back(session_json(s));
  return {{"sessions", std::move(sessions)},
          {"next_before", page.next_before ? json::value(to_text(*page.next_before)) : json::value(nullptr)}};
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

json::object message_page_json(const store::MessagePage& page, std::size_t max_bytes) {
  std::vector<json::object> kept;  // newest first
  std::size_t bytes = 0;
  for (auto it = page.messages.rbegin(); it != page.messages.rend(); ++it) {
    auto m = message_json(*it);
    auto size = json::serialize(m).size() + 1;  // and its comma
    if (!kept.empty() && bytes + size > max_bytes) break;
    bytes += size;
    kept.push_back(std::move(m));
  }
  bool cut = kept.size() < page.messages.size();
  json::value next = cut ? json::value(page.messages[page.messages.size() - kept.size()].message_id)
                         : page.next_before ? json::value(*page.next_before) : json::value(nullptr);
  json::array out;
  out.reserve(kept.size());
  for (auto it = kept.rbegin(); it != kept.rend(); ++it) out.push_back(std::move(*it));
  return json::object{{"title", page.title}, {"messages", std::move(out)}, {"next_before", std::move(next)}};
}

}  // namespace chat::api
