#pragma once
// The JSON messages of docs/API.md#nats and the SSE event payloads of section 3.
// Decoders validate everything that comes from outside (other pods, workers in
// other languages) and say what was wrong; encoders emit every contract field.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chat::protocol {

struct HistoryEntry {
  std::string role;  // user | assistant | system
  std::string content;
  bool operator==(const HistoryEntry&) const = default;
};

struct WorkflowContext {
  std::string ai_provider;  // empty: the worker's default
  std::string model;        // empty: the provider's default
  std::optional<double> temperature;
  std::optional<std::int64_t> max_tokens;
  std::string system_prompt;
  std::vector<HistoryEntry> conversation_history;
  bool operator==(const WorkflowContext&) const = default;
};

struct WorkflowRequest {
  std::string message_id;
  std::string session_id;
  std::string user_id;
  std::string message;
  WorkflowContext context;
  std::string timestamp;
  std::string correlation_id;
  // The pod that accepted the request: it stores the reply, so the worker sends
  // it every chunk, whichever pods hold streams. Empty from older senders.
  std::string accepting_pod;
  bool operator==(const WorkflowRequest&) const = default;
};

enum class ChunkType { content, metadata, error, system };
std::string_view to_string(ChunkType t);

struct ChunkMetadata {
  std::string model;
  std::optional<std::int64_t> tokens_used;
  std::string finish_reason;  // stop | length | error | cancelled
  bool operator==(const ChunkMetadata&) const = default;
};

struct ChunkError {
  std::string code;
  std::string message;
  bool operator==(const ChunkError&) const = default;
};

struct ResponseChunk {
  std::string session_id;
  std::string message_id;
  std::uint32_t chunk_id = 0;
  // Which generation of the reply: 1, or more after a worker died with it and
  // the request was delivered again. A newer attempt replaces an older one.
  std::uint32_t attempt = 1;
  std::string chunk;
  ChunkType chunk_type = ChunkType::content;
  bool is_final = false;
  std::optional<ChunkMetadata> metadata;
  std::optional<ChunkError> error;
  std::string timestamp;
  std::string correlation_id;
  // The JSON the chunk arrived as, when it can be forwarded unchanged: every
  // contract field present and on one line. Saves re-encoding each chunk for
  // its SSE event; not part of the chunk's value.
  std::string wire;
  bool operator==(const ResponseChunk& o) const {
    return session_id == o.session_id && message_id == o.message_id && chunk_id == o.chunk_id &&
           attempt == o.attempt && chunk == o.chunk &&
           chunk_type == o.chunk_type && is_final == o.is_final && metadata == o.metadata && error == o.error &&
           timestamp == o.timestamp && correlation_id == o.correlation_id;
  }
};

struct CancelRequest {
  std::string message_id;
  std::string session_id;
  std::string user_id;
  bool operator==(const CancelRequest&) const = default;
};

// A pod asks for a session's chunks again: every worker that still has them
// republishes them to chat.pod.{pod_id}.response (docs/API.md#replay-request: late join, gap repair).
struct ReplayRequest {
  std::string session_id;
  std::string pod_id;
  std::string message_id;  // empty: the session's running replies; else that reply, finished or not
  bool operator==(const ReplayRequest&) const = default;
};

// A session was deleted by its owner through pod `pod_id` (docs/API.md#session-deleted):
// every other pod ends the session's streams and replies, as that pod did.
struct SessionDeleted {
  std::string session_id;
  std::string user_id;
  std::string pod_id;
  bool operator==(const SessionDeleted&) const = default;
};

// Largest chunk id accepted from the bus; far above any real reply.
inline constexpr std::uint32_t kMaxChunkId = 10'000'000;
inline constexpr std::uint32_t kMaxAttempt = 1'000;
inline constexpr std::int64_t kMaxSafeInteger = (std::int64_t{1} << 53) - 1;  // JavaScript's
inline constexpr std::size_t kMaxErrorMessageBytes = 2'048;

std::string encode(const WorkflowRequest& r);
std::string encode(const ResponseChunk& c);
std::string encode(const CancelRequest& c);
std::string encode(const ReplayRequest& r);
std::string encode(const SessionDeleted& d);

// nullopt with `error` set when the payload is not a valid message.
std::optional<WorkflowRequest> decode_workflow_request(std::string_view json, std::string& error);
std::optional<ResponseChunk> decode_response_chunk(std::string_view json, std::string& error);
std::optional<CancelRequest> decode_cancel_request(std::string_view json, std::string& error);
// A cancel as it came on `subject` (chat.workflow.cancel.{message_id}): one
// naming another message than its subject's is refused too.
std::optional<CancelRequest> decode_cancel_on(std::string_view subject, std::string_view json, std::string& error);
std::optional<ReplayRequest> decode_replay_request(std::string_view json, std::string& error);
// As it came on `subject` (chat.session.{session_id}.deleted): one naming
// another session than its subject's is refused.
std::optional<SessionDeleted> decode_session_deleted_on(std::string_view subject, std::string_view json,
                                                        std::string& error);

}  // namespace chat::protocol
