#include "pod/reply_traces.hpp"

#include <utility>

namespace chat::pod {

void ReplyTraces::accepted(const std::string& message_id, const trace::SpanContext& parent) {
  if (!parent.valid() || !parent.sampled) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  replies_.forget_before(now - keep_for_);
  replies_.remember(message_id, now, Reply{parent, std::chrono::system_clock::now()});
}

void ReplyTraces::first_chunk(const std::string& message_id) {
  trace::SpanContext parent;
  std::chrono::system_clock::time_point accepted;
  {
    std::lock_guard lock(mutex_);
    auto* reply = replies_.find(message_id);
    if (!reply || std::exchange(reply->first_chunk_seen, true)) return;
    parent = reply->parent;
    accepted = reply->accepted;
  }
  auto span = tracer_.start("chat.first_chunk", trace::SpanKind::internal, parent, accepted);
  span.set("chat.message_id", message_id);
  span.end();
}

trace::Span ReplyTraces::store_write(const std::string& message_id) {
  trace::SpanContext parent;
  {
    std::lock_guard lock(mutex_);
    auto reply = replies_.take(message_id);
    if (!reply) return {};
    parent = reply->parent;
  }
  auto span = tracer_.start("chat.store_reply", trace::SpanKind::client, parent);
  span.set("chat.message_id", message_id);
  return span;
}

void ReplyTraces::forget(const std::string& message_id) {
  std::lock_guard lock(mutex_);
  replies_.take(message_id);
}

}  // namespace chat::pod
