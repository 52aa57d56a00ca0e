#pragma once
// What the chunk log says about a session's replies: each reply once, in the
// order they started, with the chunks of the attempt that counts — the first
// one that finished (the one the store keeps), else the newest. Pure logic.

#include <string>
#include <vector>

#include "buffer/buffer_manager.hpp"
#include "protocol/messages.hpp"

namespace chat::hub {

struct LoggedReply {
  std::string session_id;
  std::string message_id;
  std::uint32_t attempt = 1;
  bool finished = false;      // its final chunk is in the log
  bool had_attempts = false;  // chunks of another attempt are in the log too
  std::vector<protocol::ResponseChunk> chunks;  // of `attempt`, by chunk id, each once
  // Where its first and last entries (of any attempt) stand among the entries read.
  std::size_t first_entry = 0;
  std::size_t last_entry = 0;

  // The stored form of a finished reply.
  buffer::FinishedMessage to_finished() const;
};

std::vector<LoggedReply> group_logged_replies(std::vector<protocol::ResponseChunk> chunks);

}  // namespace chat::hub
