#pragma once
// The trace of each reply this pod accepted, kept from the POST until the
// reply is stored, so the spans of its first chunk and of its store write join
// the trace of the request that asked for it (the HTTP span is over by then).
// Every reply accepted here is stored by about 2 x BUFFER_MAX_AGE, or
// forgotten (its session deleted, its request refused). Bounded all the same:
// past kMaxReplies replies waiting, the entries older than `keep_for` go; if
// that frees no room, new replies go untraced.

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

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
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct Reply {
    trace::SpanContext parent;
    std::chrono::system_clock::time_point accepted;
    SteadyTime kept_since;
    bool first_chunk_seen = false;
  };
  // Drops the entries older than keep_for_, at most once per keep_for_ / 8:
  // a pod full of replies still running does not scan them for every chat.
  void drop_old(SteadyTime now);

  trace::Tracer tracer_;
  std::chrono::milliseconds keep_for_;
  SteadyTime last_sweep_{};
  // Guards replies_: POST handlers, bus threads (chunks) and the hub's shards
  // (stored replies) all reach it, once or twice per reply.
  std::mutex mutex_;
  std::unordered_map<std::string, Reply> replies_;
};

}  // namespace chat::pod
