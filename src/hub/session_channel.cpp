#include "hub/session_channel.hpp"

#include <algorithm>

namespace chat::hub {

Backlog& Channel::backlog(const std::string& message_id) {
  if (auto* b = find(message_id)) return *b;
  backlogs_.push_back(Backlog{message_id, {}, 0, false, false, false, {}});
  return backlogs_.back();
}

Backlog* Channel::find(const std::string& message_id) {
  for (auto& b : backlogs_)
    if (b.message_id == message_id) return &b;
  return nullptr;
}

std::size_t Channel::publish(const std::string& message_id, std::int64_t chunk_id, const sse::Frame& frame,
                             std::size_t max_frames) {
  auto& b = backlog(message_id);
  std::size_t grew = 0;
  if (b.frames.size() < max_frames) {
    b.frames.emplace_back(chunk_id, frame);
    b.bytes += frame->size();
    grew = frame->size();
  } else {
    b.overflowed = true;
  }
  if (members_.empty()) return grew;
  b.seen_live = true;
  for (const auto& m : members_) {
    if (chunk_id != kNotAChunk && chunk_id <= m.skip_through && m.skip_message == message_id) continue;
    m.connection->send(frame);
  }
  return grew;
}

JoinPlan Channel::plan_join(const std::optional<ResumeCursor>& cursor, SteadyTime now,
                            std::chrono::milliseconds late_join_window) {
  JoinPlan plan;
  auto resume_at = backlogs_.end();
  if (cursor) {
    resume_at = std::find_if(backlogs_.begin(), backlogs_.end(),
                             [&](const Backlog& b) { return b.message_id == cursor->message_id; });
  }
  if (resume_at != backlogs_.end()) {
    // Everything after the cursor: the rest of its reply, then every later one.
    auto& frames = resume_at->frames;
    auto pos = std::find_if(frames.begin(), frames.end(), [&](const auto& f) {
      return f.first == static_cast<std::int64_t>(cursor->chunk_id);
    });
    if (pos == frames.end() && resume_at->overflowed) {
      plan.reset = true;
      return plan;
    }
    for (auto it = pos == frames.end() ? frames.begin() : std::next(pos); it != frames.end(); ++it)
      if (it->first == kNotAChunk || it->first > static_cast<std::int64_t>(cursor->chunk_id))
        plan.frames.push_back(it->second);
    resume_at->seen_live = true;
    for (auto b = std::next(resume_at); b != backlogs_.end(); ++b) {
      for (const auto& f : b->frames) plan.frames.push_back(f.second);
      b->seen_live = true;
    }
    return plan;
  }
  // A fresh stream: replies still running, and finished ones nobody saw (the
  // page posted first and subscribed a moment later).
  for (auto& b : backlogs_) {
    bool wanted = !b.finished || (!b.seen_live && now - b.finished_at < late_join_window);
    if (!wanted) continue;
    if (b.overflowed) {
      plan.reset = true;
      continue;
    }
    for (const auto& f : b.frames) plan.frames.push_back(f.second);
    b.seen_live = true;
  }
  return plan;
}

bool Channel::remove(const std::shared_ptr<sse::EventSink>& c) {
  auto it = std::find_if(members_.begin(), members_.end(), [&](const Member& m) { return m.connection == c; });
  if (it == members_.end()) return false;
  members_.erase(it);
  return true;
}

std::size_t Channel::drop_backlogs() {
  std::size_t freed = 0;
  for (const auto& b : backlogs_) freed += b.bytes;
  backlogs_.clear();
  return freed;
}

Backlog* Channel::finish(const std::string& message_id, SteadyTime now) {
  auto* b = find(message_id);
  if (!b) return nullptr;
  b->finished = true;
  b->finished_at = now;
  return b;
}

}  // namespace chat::hub
