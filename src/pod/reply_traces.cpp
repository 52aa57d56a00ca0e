#include "pod/reply_traces.hpp"

#include <utility>

namespace chat::pod {

void ReplyTraces::accepted(const std::string& message_id, const trace::SpanContext& parent) {
  if (!parent.valid() || !parent.sampled) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  if (replies_.size() >= kMaxReplies) drop_old(now);
  if (replies_.size() < kMaxReplies) replies_[message_id] = Reply{parent, std::chrono::system_clock::now(), now};
}

void ReplyTraces::drop_old(SteadyTime now) {
  if (now - last_sweep_ < keep_for_ / 8) return;
  last_sweep_ = now;
  std::erase_if(replies_, [&](const auto& entry) { return now - entry.second.kept_since >= keep_for_; });
}

void ReplyTraces::first_chunk(const std::string& message_id) {
  trace::SpanContext parent;
  std::chrono::system_clock::time_point accepted;
  {
    std::lock_guard lock(mutex_);
    auto it = replies_.find(message_id);
    if (it == replies_.end() || std::exchange(it->second.first_chunk_seen, true)) return;
    parent = it->second.parent;
    accepted = it->second.accepted;
  }
  auto span = tracer_.start("chat.first_chunk", trace::SpanKind::internal, parent, accepted);
  span.set("chat.message_id", message_id);
  span.end();
}

trace::Span ReplyTraces::store_write(const std::string& message_id) {
  trace::SpanContext parent;
  {
    std::lock_guard lock(mutex_);
    auto it = replies_.find(message_id);
    if (it == replies_.end()) return {};
    parent = it->second.parent;
    replies_.erase(it);
  }
  auto span = tracer_.start("chat.store_reply", trace::SpanKind::client, parent);
  span.set("chat.message_id", message_id);
  return span;
}

void ReplyTraces::forget(const std::string& message_id) {
  std::lock_guard lock(mutex_);
  replies_.erase(message_id);
}

}  // namespace chat::pod
