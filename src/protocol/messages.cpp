#include "protocol/messages.hpp"

#include <boost/json.hpp>

#include <algorithm>

#include "common/identifier.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"
#include "protocol/json_fields.hpp"
#include "protocol/subjects.hpp"

namespace json = boost::json;

namespace chat::protocol {
namespace {

// Scratch memory for one message's JSON tree: chunks are decoded and encoded
// on every hop, and the tree never outlives the call, so it needs no malloc.
class Scratch {
 public:
  json::storage_ptr storage() { return json::storage_ptr(&resource_); }

 private:
  unsigned char buffer_[4096];
  json::monotonic_resource resource_{buffer_, sizeof buffer_};
};

// A null value with `error` set unless the text is one JSON object.
json::value parse_object(std::string_view text, std::string& error, json::storage_ptr storage = {}) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec, std::move(storage));
  if (ec) {
    error = "malformed JSON: " + ec.message();
    return nullptr;
  }
  if (!root.is_object()) {
    error = "expected a JSON object";
    return nullptr;
  }
  return root;
}

// Empty: not given (a chunk before the end).
bool is_finish_reason(std::string_view s) {
  return s.empty() || s == "stop" || s == "length" || s == "error" || s == "cancelled";
}

std::optional<ChunkType> chunk_type_from(std::string_view s) {
  if (s.empty() || s == "content") return ChunkType::content;
  if (s == "metadata") return ChunkType::metadata;
  if (s == "error") return ChunkType::error;
  if (s == "system") return ChunkType::system;
  return std::nullopt;
}

}  // namespace

std::string_view to_string(ChunkType t) {
  switch (t) {
    case ChunkType::content: return "content";
    case ChunkType::metadata: return "metadata";
    case ChunkType::error: return "error";
    case ChunkType::system: return "system";
  }
  return "content";
}

std::string encode(const WorkflowRequest& r) {
  json::object ctx;
  // Absent, not empty, when the user named none: a worker then uses its default.
  if (!r.context.ai_provider.empty()) ctx["ai_provider"] = r.context.ai_provider;
  if (!r.context.model.empty()) ctx["model"] = r.context.model;
  if (r.context.temperature) ctx["temperature"] = *r.context.temperature;
  if (r.context.max_tokens) ctx["max_tokens"] = *r.context.max_tokens;
  if (!r.context.system_prompt.empty()) ctx["system_prompt"] = r.context.system_prompt;
  json::array history;
  history.reserve(r.context.conversation_history.size());
  for (const auto& h : r.context.conversation_history) history.push_back(json::object{{"role", h.role}, {"content", h.content}});
  ctx["conversation_history"] = std::move(history);
  json::object o;
  o["message_id"] = r.message_id;
  o["session_id"] = r.session_id;
  o["user_id"] = r.user_id;
  o["message"] = r.message;
  o["context"] = std::move(ctx);
  o["timestamp"] = r.timestamp;
  o["correlation_id"] = r.correlation_id;
  if (!r.accepting_pod.empty()) o["accepting_pod"] = r.accepting_pod;
  return json::serialize(o);
}

std::string encode(const ResponseChunk& c) {
  Scratch scratch;
  json::object o(scratch.storage());
  o["session_id"] = c.session_id;
  o["message_id"] = c.message_id;
  o["chunk_id"] = c.chunk_id;
  if (c.attempt > 1) o["attempt"] = c.attempt;
  o["chunk"] = c.chunk;
  o["chunk_type"] = to_string(c.chunk_type);
  o["is_final"] = c.is_final;
  if (c.metadata) {
    json::object m;
    m["model"] = c.metadata->model;
    if (c.metadata->tokens_used) m["tokens_used"] = *c.metadata->tokens_used;
    m["finish_reason"] = c.metadata->finish_reason;
    o["metadata"] = std::move(m);
  }
  if (c.error) o["error"] = json::object{{"code", c.error->code}, {"message", c.error->message}};
  o["timestamp"] = c.timestamp;
  if (!c.correlation_id.empty()) o["correlation_id"] = c.correlation_id;
  return json::serialize(o);
}

std::string encode(const CancelRequest& c) {
  return json::serialize(json::object{{"message_id", c.message_id}, {"session_id", c.session_id}, {"user_id", c.user_id}});
}

std::string encode(const ReplayRequest& r) {
  json::object o{{"session_id", r.session_id}, {"pod_id", r.pod_id}};
  if (!r.message_id.empty()) o["message_id"] = r.message_id;
  return json::serialize(o);
}

std::string encode(const SessionDeleted& d) {
  return json::serialize(json::object{{"session_id", d.session_id}, {"user_id", d.user_id}, {"pod_id", d.pod_id}});
}

std::optional<WorkflowRequest> decode_workflow_request(std::string_view text, std::string& error) {
  error.clear();
  auto root = parse_object(text, error);
  if (!root.is_object()) return std::nullopt;
  JsonFields in(root.get_object(), error);
  WorkflowRequest r;
  r.message_id = in.identifier("message_id");
  r.session_id = in.identifier("session_id");
  r.user_id = in.identifier("user_id");
  r.message = in.string("message", true);
  r.timestamp = in.string("timestamp");
  r.correlation_id = in.string("correlation_id");
  r.accepting_pod = in.optional_identifier("accepting_pod");
  if (auto* ctx = in.object("context")) {
    JsonFields c(*ctx, error, "context.");
    r.context.ai_provider = c.string("ai_provider");
    if (!r.context.ai_provider.empty() && !is_valid_identifier(r.context.ai_provider))
      c.fail("context.ai_provider must be a provider name (an identifier)");
    r.context.model = c.string("model");
    if (!r.context.model.empty() && !is_valid_model_name(r.context.model))
      c.fail("context.model must be 1 to 128 printable characters without spaces");
    r.context.temperature = c.number("temperature", 0.0, 2.0);
    r.context.max_tokens = c.integer("max_tokens", 1, 10'000'000);
    r.context.system_prompt = c.string("system_prompt");
    if (auto* history = c.array("conversation_history")) {
      for (const auto& item : *history) {
        if (!item.is_object()) {
          c.fail("conversation_history entries must be objects");
          break;
        }
        JsonFields h(item.get_object(), error, "context.conversation_history[].");
        HistoryEntry e{h.string("role", true), h.string("content", true)};
        if (h.ok() && e.role != "user" && e.role != "assistant" && e.role != "system")
          h.fail("conversation_history role must be user, assistant or system");
        r.context.conversation_history.push_back(std::move(e));
      }
    }
  }
  if (!in.ok()) return std::nullopt;
  return r;
}

std::optional<ResponseChunk> decode_response_chunk(std::string_view text, std::string& error) {
  error.clear();
  Scratch scratch;
  auto root = parse_object(text, error, scratch.storage());
  if (!root.is_object()) return std::nullopt;
  JsonFields in(root.get_object(), error);
  ResponseChunk c;
  c.session_id = in.identifier("session_id");
  c.message_id = in.identifier("message_id");
  auto id = in.integer("chunk_id", 0, kMaxChunkId);
  if (in.ok() && !id) in.fail("chunk_id is required");
  c.chunk_id = static_cast<std::uint32_t>(id.value_or(0));
  c.attempt = static_cast<std::uint32_t>(in.integer("attempt", 1, kMaxAttempt).value_or(1));
  c.chunk = in.string("chunk");
  auto type = chunk_type_from(in.string("chunk_type"));
  if (!type) in.fail("chunk_type must be content, metadata, error or system");
  c.chunk_type = type.value_or(ChunkType::content);
  c.is_final = in.boolean("is_final");
  c.timestamp = in.string("timestamp");
  // A worker that sends none, or one that is not RFC 3339 (the contract's
  // format): the chunk is stamped when it is read, so every event a client
  // gets has a time it can parse.
  const bool stamped_here = !parse_rfc3339(c.timestamp);
  if (stamped_here) c.timestamp = rfc3339_now();
  c.correlation_id = in.string("correlation_id");
  if (auto* m = in.object("metadata")) {
    JsonFields mr(*m, error, "metadata.");
    ChunkMetadata meta;
    meta.model = mr.string("model");
    // At most 2^53 - 1: a browser reads JSON numbers as doubles.
    meta.tokens_used = mr.integer("tokens_used", 0, kMaxSafeInteger);
    meta.finish_reason = mr.string("finish_reason");
    if (!is_finish_reason(meta.finish_reason)) mr.fail("metadata.finish_reason must be stop, length, error or cancelled");
    c.metadata = std::move(meta);
  }
  if (auto* e = in.object("error")) {
    JsonFields er(*e, error, "error.");
    c.error = ChunkError{er.string("code"), er.string("message")};
    // Shown to users and stored: a code that is no identifier is the generic
    // one, and a message is cut to a bound (on a UTF-8 boundary).
    if (!c.error->code.empty() && !is_valid_identifier(c.error->code)) c.error->code = "provider_error";
    c.error->message.resize(utf8_byte_prefix(c.error->message, kMaxErrorMessageBytes).size());
  }
  if (!in.ok()) return std::nullopt;
  // Forwarded as it came only when it is a plain chunk with every field the
  // contract requires there (null is absent: a client would read it as the
  // wrong type) and no other. The rest, one or two a reply, is encoded again
  // from its checked values.
  const auto& obj = root.get_object();
  auto present = [&obj](std::string_view key) {
    auto* v = obj.if_contains(key);
    return v && !v->is_null();
  };
  static constexpr std::string_view kPlainFields[] = {"session_id", "message_id", "chunk_id",  "attempt",       "chunk",
                                                      "chunk_type", "is_final",   "timestamp", "correlation_id"};
  auto known = [](std::string_view key) {
    return std::find(std::begin(kPlainFields), std::end(kPlainFields), key) != std::end(kPlainFields);
  };
  bool complete = present("chunk") && present("chunk_type") && present("is_final") && !stamped_here &&
                  !c.is_final && std::all_of(obj.begin(), obj.end(), [&](const auto& kv) { return known(kv.key()); });
  if (complete && text.find_first_of("\r\n") == std::string_view::npos) c.wire = std::string(text);
  return c;
}

std::optional<CancelRequest> decode_cancel_request(std::string_view text, std::string& error) {
  error.clear();
  auto root = parse_object(text, error);
  if (!root.is_object()) return std::nullopt;
  JsonFields in(root.get_object(), error);
  CancelRequest c;
  c.message_id = in.identifier("message_id");
  // The pod that takes a cancel may not know the message's session.
  c.session_id = in.optional_identifier("session_id");
  c.user_id = in.identifier("user_id");
  if (!in.ok()) return std::nullopt;
  return c;
}

std::optional<CancelRequest> decode_cancel_on(std::string_view subject, std::string_view json, std::string& error) {
  auto c = decode_cancel_request(json, error);
  if (c && subject != subjects::cancel(c->message_id)) {
    error = "message_id " + c->message_id + " is not the subject's message";
    return std::nullopt;
  }
  return c;
}

std::optional<ReplayRequest> decode_replay_request(std::string_view text, std::string& error) {
  error.clear();
  auto root = parse_object(text, error);
  if (!root.is_object()) return std::nullopt;
  JsonFields in(root.get_object(), error);
  ReplayRequest r{in.identifier("session_id"), in.identifier("pod_id"), in.optional_identifier("message_id")};
  if (!in.ok()) return std::nullopt;
  return r;
}

std::optional<SessionDeleted> decode_session_deleted_on(std::string_view subject, std::string_view text,
                                                        std::string& error) {
  error.clear();
  auto root = parse_object(text, error);
  if (!root.is_object()) return std::nullopt;
  JsonFields in(root.get_object(), error);
  SessionDeleted d{in.identifier("session_id"), in.identifier("user_id"), in.identifier("pod_id")};
  if (!in.ok()) return std::nullopt;
  if (subject != subjects::session_deleted(d.session_id)) {
    error = "session_id " + d.session_id + " is not the subject's session";
    return std::nullopt;
  }
  return d;
}

}  // namespace chat::protocol
