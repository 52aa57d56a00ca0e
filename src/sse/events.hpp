#pragma once
// The Server-Sent Events frames of the stream (docs/API.md, "SSE stream"). A frame is encoded once and its
// bytes are shared by every connection of the session (Frame is immutable).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.hpp"
#include "protocol/messages.hpp"

namespace chat::sse {

// The encoded bytes of one event, shared by every stream of the session. A
// chunk's frame also knows the chunk's timestamp, so the time to the socket
// can be measured where the bytes are written.
struct EncodedFrame : std::string {
  explicit EncodedFrame(std::string bytes, SystemTime origin = {}) : std::string(std::move(bytes)), origin(origin) {}
  SystemTime origin;  // epoch (zero) when not a chunk
  // A content chunk that a slow stream may merge with the next one of its
  // reply (merge_chunk_frames): which reply and attempt (0: not mergeable), and
  // the chunk id it ends with.
  std::uint64_t mergeable_reply = 0;
  std::uint32_t last_chunk_id = 0;
};
using Frame = std::shared_ptr<const EncodedFrame>;

// Bytes as they are (a response head; tests).
Frame raw_frame(std::string bytes);

// `data` must be one line (compact JSON is).
Frame make_frame(std::string_view event, std::string_view data, std::string_view id = {}, SystemTime origin = {});

Frame retry_frame(std::chrono::milliseconds retry);
Frame connected_frame(std::string_view connection_id, std::string_view session_id, std::string_view pod_id);
Frame chunk_frame(const protocol::ResponseChunk& chunk);
// One chunk event carrying the text of `earlier` and then `later`, with the
// fields and the event id of `later` (so a cursor taken from it resumes after
// both) and `first_chunk_id`, the first chunk whose text it carries; null
// unless both are mergeable content chunks of one reply attempt and `later`
// follows `earlier` directly. Its origin is the earlier one's.
Frame merge_chunk_frames(const EncodedFrame& earlier, const EncodedFrame& later);
// `status`: how the reply ended (complete, error, cancelled, incomplete).
Frame complete_frame(std::string_view message_id, std::int64_t token_count, std::string_view finish_reason,
                     std::string_view status);
Frame error_frame(std::string_view message_id, std::string_view code, std::string_view message,
                  const std::vector<std::uint32_t>& chunk_ids = {});
Frame ping_frame(std::int64_t unix_seconds);
// `message_id` set: only that reply starts over (a newer attempt); else the
// client should reload the session's history.
Frame reset_frame(std::string_view session_id, std::string_view reason, std::string_view message_id = {});
// The reply waits for chunk `next_chunk_id`: said once per wait, so a client is
// never left looking at nothing; the stream goes on when the chunk comes.
Frame delayed_frame(std::string_view message_id, std::uint32_t next_chunk_id, std::int64_t waited_ms);

// The response head of an SSE stream (close-delimited body); `cors_origin` is the
// Access-Control-Allow-Origin value (empty: none), with Vary: Origin when it echoes one.
std::string stream_head(std::string_view cors_origin);

// The whole answer (503, JSON error body) to a stream that reached the pod
// after it began to drain: the API checked too early to refuse it itself.
std::string unavailable_answer(std::string_view cors_origin);

}  // namespace chat::sse
