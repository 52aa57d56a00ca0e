#pragma once
// The trace of each reply this pod accepted, kept from the POST until the
// reply is stored, so the spans of its first chunk and of its store write join
// the trace of the request that asked for it (the HTTP span is over by then).
// Bounded as ReplyUsers is: an entry goes after `keep_for` (a reply ends by
// then: a reply whose worker never answered is never stored) or past
// kMaxReplies, the oldest first; such a reply's late spans go untraced.

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>

#include "buffer/recent_ids.hpp"
#include "trace/tracer.hpp"

namespace chat::pod {

class ReplyTraces {
 public:
  static constexpr std::size_t kMaxReplies = 100'000;

  ReplyTraces(trace::Tracer tracer, std::chrono::milliseconds keep_for) : tracer_(tracer), keep_for_(keep_for) {}

  bool enabled() const { return tracer_.enabled(); }
  const trace::Tracer& tracer() const { return tracer_; }

  // The reply `message_id` was accepted within the trace of `parent`.
  void accepted(const std::string& message_id, const trace::SpanContext& parent);
  // Its first chunk arrived: a span from the acceptance to now (once per reply).
  void first_chunk(const std::string& message_id);
  // Its store write starts: the span to end when the write is done (not
  // recording for a reply accepted untraced). Forgets the reply.
  trace::Span store_write(const std::string& message_id);
  void forget(const std::string& message_id);

 private:
  struct Reply {
    trace::SpanContext parent;
    std::chrono::system_clock::time_point accepted;
    bool first_chunk_seen = false;
  };

  trace::Tracer tracer_;
  std::chrono::milliseconds keep_for_;
  // Guards replies_: POST handlers, bus threads (chunks) and the hub's shards
  // (stored replies) all reach it, once or twice per reply.
  std::mutex mutex_;
  buffer::RecentIds<Reply> replies_{kMaxReplies};
};

}  // namespace chat::pod
