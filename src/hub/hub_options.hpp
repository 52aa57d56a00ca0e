#pragma once
// The session hub's settings (BUFFER_* and SSE_* in the configuration).

#include <chrono>
#include <cstddef>

#include "buffer/buffer_manager.hpp"

namespace chat::hub {

struct HubOptions {
  std::size_t shards = 8;
  buffer::Limits buffer;
  std::chrono::milliseconds cleanup_interval{30'000};
  std::chrono::milliseconds heartbeat_interval{10'000};
  // A reply no stream saw is kept this long for a stream that opens late.
  std::chrono::milliseconds late_join_window{30'000};
  // Finished replies are kept this long (and within the byte budget, per shard)
  // for streams that resume with Last-Event-ID.
  std::chrono::milliseconds replay_window{600'000};
  std::size_t replay_max_bytes = 8 * 1024 * 1024;
  // The pod's memory for replies (BUFFER_MAX_BYTES): reply text in the reorder
  // buffers plus the frames kept for late and resuming streams; 0: no budget.
  // Each shard gets an equal share and, past it, drops finished replies' frames
  // first; the pod refuses new chats while the whole is spent (SessionHub::stats).
  std::size_t reply_memory_budget = 0;
  // Frames kept per in-flight reply for late streams (beyond: the late stream
  // gets an explicit reset instead of a silent gap).
  std::size_t max_backlog_frames = 20'000;
  // A gap this old makes the pod ask the workers for the message again (the
  // routing cache may have sent its chunks elsewhere for up to a second).
  std::chrono::milliseconds replay_after{1'000};
  // A watched reply that waits this long for its next chunk: its streams get a
  // `delayed` event.
  std::chrono::milliseconds delay_notice_after{3'000};
  // The pod has a chunk log: a stream resuming a reply this pod does not hold
  // catches up from the log (else from the workers' replay).
  bool log_catch_up = false;
  // Broadcast chunks of sessions not held here, kept per shard for a stream
  // that opens a moment later.
  std::chrono::milliseconds broadcast_window{10'000};
  std::size_t broadcast_bytes = 1 << 20;
};

}  // namespace chat::hub
