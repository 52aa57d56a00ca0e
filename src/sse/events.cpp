#include "sse/events.hpp"

#include <boost/json.hpp>

#include "sse/resume_cursor.hpp"

namespace json = boost::json;

namespace chat::sse {

Frame raw_frame(std::string bytes) { return std::make_shared<const EncodedFrame>(std::move(bytes)); }

Frame make_frame(std::string_view event, std::string_view data, std::string_view id, SystemTime origin) {
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
  return std::make_shared<const EncodedFrame>(std::move(f), origin);
}

Frame retry_frame(std::chrono::milliseconds retry) {
  return raw_frame("retry: " + std::to_string(retry.count()) + "\n\n");
}

Frame connected_frame(std::string_view connection_id, std::string_view session_id, std::string_view pod_id) {
  return make_frame("connected", json::serialize(json::object{
                                     {"connection_id", connection_id}, {"session_id", session_id}, {"pod_id", pod_id}}));
}

Frame chunk_frame(const protocol::ResponseChunk& chunk) {
  return make_frame("chunk", chunk.wire.empty() ? protocol::encode(chunk) : chunk.wire,
                    event_id(chunk.message_id, chunk.chunk_id), parse_rfc3339(chunk.timestamp).value_or(SystemTime{}));
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

std::string stream_head(std::string_view cors_origin) {
  std::string h =
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\n"
      "Connection: close\r\n";
  if (!cors_origin.empty()) {
    h += "Access-Control-Allow-Origin: ";
    h += cors_origin;
    h += "\r\n";
    // An echoed origin (not "*") makes the head depend on the request's Origin.
    if (cors_origin != "*") h += "Vary: Origin\r\n";
  }
  h += "\r\n";
  return h;
}

}  // namespace chat::sse
