#pragma once
// Server-Sent Events frames of SPEC section 3. A frame is encoded once and its
// bytes are shared by every connection of the session (Frame is immutable).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "buffer/buffer_manager.hpp"
#include "protocol/messages.hpp"

namespace chat::sse {

using Frame = std::shared_ptr<const std::string>;

// `data` must be one line (compact JSON is).
Frame make_frame(std::string_view event, std::string_view data, std::string_view id = {});

Frame retry_frame(std::chrono::milliseconds retry);
Frame connected_frame(std::string_view connection_id, std::string_view session_id, std::string_view pod_id);
Frame chunk_frame(const protocol::ResponseChunk& chunk);
Frame complete_frame(const buffer::FinishedMessage& m);
Frame error_frame(std::string_view message_id, std::string_view code, std::string_view message,
                  const std::vector<std::uint32_t>& chunk_ids = {});
Frame ping_frame(std::int64_t unix_seconds);
Frame reset_frame(std::string_view session_id, std::string_view reason);

// The response head of an SSE stream (close-delimited body); `cors_origin` is the
// Access-Control-Allow-Origin value (empty: none), with Vary: Origin when it echoes one.
std::string stream_head(std::string_view cors_origin);

}  // namespace chat::sse
