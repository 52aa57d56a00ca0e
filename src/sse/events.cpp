#include "sse/events.hpp"

#include <boost/json.hpp>

#include <functional>
#include <optional>

#include "sse/resume_cursor.hpp"

namespace json = boost::json;

namespace chat::sse {

Frame raw_frame(std::string bytes) { return std::make_shared<const EncodedFrame>(std::move(bytes)); }

namespace {

std::shared_ptr<EncodedFrame> build_frame(std::string_view event, std::string_view data, std::string_view id,
                                          SystemTime origin) {
  std::string f;
  f.reserve(event.size() + data.size() + id.size() + 24);
  if (!id.empty()) {
    f += "id: ";
    f += id;
    f += '\n';
  }
  f += "event: ";
  f += event;
  f += "\ndata: ";
  f += data;
  f += "\n\n";
  return std::make_shared<EncodedFrame>(std::move(f), origin);
}

}  // namespace

Frame make_frame(std::string_view event, std::string_view data, std::string_view id, SystemTime origin) {
  return build_frame(event, data, id, origin);
}

Frame retry_frame(std::chrono::milliseconds retry) {
  return raw_frame("retry: " + std::to_string(retry.count()) + "\n\n");
}

Frame connected_frame(std::string_view connection_id, std::string_view session_id, std::string_view pod_id) {
  return make_frame("connected", json::serialize(json::object{
                                     {"connection_id", connection_id}, {"session_id", session_id}, {"pod_id", pod_id}}));
}

namespace {

// A quick filter, never 0 (which means "not mergeable"); merge_chunk_frames
// compares the message ids and attempts themselves, so a collision merges nothing.
std::uint64_t reply_key(std::string_view message_id, std::uint32_t attempt) {
  return ((std::hash<std::string_view>{}(message_id) ^ (attempt * 0x9E3779B97F4A7C15ull)) << 1) | 1;
}

std::int64_t attempt_of(const json::object& chunk) {
  auto it = chunk.find("attempt");
  return it != chunk.end() && it->value().is_int64() ? it->value().as_int64() : 1;
}

// The value of the `name:` line of an encoded frame.
std::string_view frame_line(std::string_view bytes, std::string_view name) {
  while (!bytes.empty()) {
    auto end = bytes.find('\n');
    auto line = bytes.substr(0, end);
    if (line.size() > name.size() + 1 && line.starts_with(name) && line[name.size()] == ':')
      return line.substr(name.size() + 2);
    if (end == std::string_view::npos) break;
    bytes.remove_prefix(end + 1);
  }
  return {};
}

std::optional<json::object> chunk_data(const EncodedFrame& f) {
  boost::system::error_code ec;
  auto v = json::parse(frame_line(f, "data"), ec);
  if (ec || !v.is_object()) return std::nullopt;
  auto& o = v.as_object();
  if (!o.contains("chunk") || !o["chunk"].is_string() || !o.contains("message_id")) return std::nullopt;
  return std::move(o);
}

}  // namespace

Frame chunk_frame(const protocol::ResponseChunk& chunk) {
  auto f = build_frame("chunk", chunk.wire.empty() ? protocol::encode(chunk) : chunk.wire,
                       event_id(chunk.message_id, chunk.chunk_id), parse_rfc3339(chunk.timestamp).value_or(SystemTime{}));
  if (chunk.chunk_type == protocol::ChunkType::content && !chunk.is_final && !chunk.error && !chunk.metadata)
    f->mergeable_reply = reply_key(chunk.message_id, chunk.attempt);
  f->last_chunk_id = chunk.chunk_id;
  return f;
}

Frame merge_chunk_frames(const EncodedFrame& earlier, const EncodedFrame& later) {
  if (earlier.mergeable_reply == 0 || earlier.mergeable_reply != later.mergeable_reply ||
      later.last_chunk_id != earlier.last_chunk_id + 1)
    return nullptr;
  auto first = chunk_data(earlier);
  auto second = chunk_data(later);
  if (!first || !second || (*first)["message_id"] != (*second)["message_id"] || attempt_of(*first) != attempt_of(*second))
    return nullptr;
  std::string text((*first)["chunk"].as_string());
  text.append((*second)["chunk"].as_string());
  (*second)["chunk"] = std::move(text);
  // Where the merged text begins, so a client can tell a merge from a gap.
  (*second)["first_chunk_id"] = first->contains("first_chunk_id") ? (*first)["first_chunk_id"] : (*first)["chunk_id"];
  auto merged = build_frame("chunk", json::serialize(*second), frame_line(later, "id"), earlier.origin);
  merged->mergeable_reply = later.mergeable_reply;
  merged->last_chunk_id = later.last_chunk_id;
  return merged;
}

Frame complete_frame(std::string_view message_id, std::int64_t token_count, std::string_view finish_reason,
                     std::string_view status) {
  return make_frame("message_complete", json::serialize(json::object{{"message_id", message_id},
                                                                     {"token_count", token_count},
                                                                     {"finish_reason", finish_reason},
                                                                     {"status", status}}));
}

Frame error_frame(std::string_view message_id, std::string_view code, std::string_view message,
                  const std::vector<std::uint32_t>& chunk_ids) {
  json::object o{{"message_id", message_id}, {"code", code}, {"message", message}};
  if (!chunk_ids.empty()) {
    json::array ids;
    for (auto id : chunk_ids) ids.push_back(id);
    o["chunk_ids"] = std::move(ids);
  }
  return make_frame("error", json::serialize(o));
}

Frame ping_frame(std::int64_t unix_seconds) {
  return make_frame("ping", "{\"timestamp\":" + std::to_string(unix_seconds) + "}");
}

Frame reset_frame(std::string_view session_id, std::string_view reason, std::string_view message_id) {
  json::object o{{"session_id", session_id}, {"reason", reason}};
  if (!message_id.empty()) o["message_id"] = message_id;
  return make_frame("reset", json::serialize(o));
}

Frame delayed_frame(std::string_view message_id, std::uint32_t next_chunk_id, std::int64_t waited_ms) {
  return make_frame("delayed", json::serialize(json::object{
                                   {"message_id", message_id}, {"next_chunk_id", next_chunk_id}, {"waited_ms", waited_ms}}));
}

namespace {

void add_cors(std::string& head, std::string_view cors_origin) {
  if (cors_origin.empty()) return;
  head += "Access-Control-Allow-Origin: ";
  head += cors_origin;
  head += "\r\n";
  // An echoed origin (not "*") makes the head depend on the request's Origin.
  if (cors_origin != "*") head += "Vary: Origin\r\n";
}

}  // namespace

std::string stream_head(std::string_view cors_origin) {
  std::string h =
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\n"
      "Connection: close\r\n";
  add_cors(h, cors_origin);
  h += "\r\n";
  return h;
}

std::string unavailable_answer(std::string_view cors_origin) {
  const auto body = json::serialize(
      json::object{{"error", json::object{{"code", "unavailable"}, {"message", "this pod is shutting down"}}}});
  std::string a =
      "HTTP/1.1 503 Service Unavailable\r\n"
      "Content-Type: application/json\r\n"
      "Retry-After: 2\r\n"
      "Connection: close\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n";
  add_cors(a, cors_origin);
  a += "\r\n";
  a += body;
  return a;
}

}  // namespace chat::sse
