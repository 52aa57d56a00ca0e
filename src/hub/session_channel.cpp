#include "hub/session_channel.hpp"

#include <algorithm>

namespace chat::hub {

bool Member::admit(const std::string& message_id, std::int64_t position) {
  auto [it, fresh] = sent.try_emplace(message_id, kNotAChunk);
  auto& last = it->second;
  if (last == kReplyEnd) return false;
  if (position == kReplyEnd) {
    last = kReplyEnd;
    return true;
  }
  if (position == kNotAChunk) return true;
  if (position <= last) return false;
  last = position;
  return true;
}

bool Member::needs_reset(const std::string& message_id, std::int64_t position,
                         std::chrono::system_clock::time_point origin) {
  if (!resume || !resume->resumed_at || position < 0 || !resume->settled.insert(message_id).second) return false;
  if (position == 0 && origin >= *resume->resumed_at) return false;  // began after the resume: all new to the client
  sent.erase(message_id);
  return true;
}

void Member::take(const std::string& message_id, std::int64_t position, const sse::Frame& frame,
                  std::vector<sse::Frame>& out) {
  if (needs_reset(message_id, position, frame->origin))
    out.push_back(sse::reset_frame(stream->session_id(), "reply_resent", message_id));
  if (admit(message_id, position)) out.push_back(frame);
}

Backlog& Channel::backlog(const std::string& message_id) {
  if (auto* b = find(message_id)) return *b;
  ++seq_;
  backlogs_.push_back(Backlog{message_id, {}, 0, false, false, false, {}, seq_, seq_});
  return backlogs_.back();
}

Backlog* Channel::find(const std::string& message_id) {
  for (auto& b : backlogs_)
    if (b.message_id == message_id) return &b;
  return nullptr;
}

void Channel::deliver(Member& member, const std::string& message_id, std::int64_t position, const sse::Frame& frame) {
  if (member.catching_up()) {
    member.resume->held.push_back(HeldFrame{message_id, position, frame});
    return;
  }
  std::vector<sse::Frame> out;
  member.take(message_id, position, frame, out);
  for (auto& f : out) member.stream->send(f);
}

std::size_t Channel::publish(const std::string& message_id, std::int64_t position, const sse::Frame& frame,
                             std::size_t max_frames) {
  auto& b = backlog(message_id);
  b.last_seq = ++seq_;
  std::size_t grew = 0;
  if (b.frames.size() < max_frames) {
    b.frames.emplace_back(position, frame);
    b.bytes += frame->size();
    grew = frame->size();
  } else {
    b.overflowed = true;
  }
  if (members_.empty()) return grew;
  b.seen_live = true;
  for (auto& m : members_) deliver(m, message_id, position, frame);
  return grew;
}

bool Channel::join(Member member, const std::optional<ResumeCursor>& cursor, SteadyTime now,
                   std::chrono::milliseconds late_join_window,
                   const std::function<sse::Frame(const std::string& message_id)>& from_start) {
  std::vector<sse::Frame> burst;
  auto take = [&](Backlog& b) {
    for (const auto& [position, frame] : b.frames)
      if (member.admit(b.message_id, position)) burst.push_back(frame);
    b.seen_live = true;
  };
  bool servable = true;
  auto resume_at = cursor ? std::find_if(backlogs_.begin(), backlogs_.end(),
                                         [&](const Backlog& b) { return b.message_id == cursor->message_id; })
                          : backlogs_.end();
  if (resume_at != backlogs_.end()) {
    // Everything after the cursor: the rest of its reply, then every later one.
    auto has_cursor_chunk = std::any_of(resume_at->frames.begin(), resume_at->frames.end(), [&](const auto& f) {
      return f.first == static_cast<std::int64_t>(cursor->chunk_id);
    });
    if (resume_at->overflowed && !has_cursor_chunk) {
      servable = false;
    } else {
      take(*resume_at);
      for (auto b = backlogs_.begin(); b != backlogs_.end(); ++b) {
        if (b == resume_at) continue;
        if (member.resume) member.resume->settled.insert(b->message_id);
        // Ended before the cursor's reply began: the client had all of it. One
        // still running may have reached the client further on its old pod
        // than here: it goes again from its start, like any other.
        if (b < resume_at && b->finished && b->last_seq < resume_at->first_seq) continue;
        if (b->overflowed) {
          servable = false;
          continue;
        }
        burst.push_back(from_start(b->message_id));
        member.sent.erase(b->message_id);
        take(*b);
      }
    }
  } else {
    // A fresh stream: replies still running, and finished ones nobody saw (the
    // page posted first and subscribed a moment later).
    for (auto& b : backlogs_) {
      bool wanted = !b.finished || (!b.seen_live && now - b.finished_at < late_join_window);
      if (!wanted) continue;
      if (b.overflowed) {
        servable = false;
        continue;
      }
      take(b);
    }
  }
  member.stream->send_backlog(burst);
  members_.push_back(std::move(member));
  return servable;
}

void Channel::take_running(Member& member, std::vector<sse::Frame>& burst) {
  for (auto& b : backlogs_) {
    if (b.finished) continue;
    for (const auto& [position, frame] : b.frames) member.take(b.message_id, position, frame, burst);
    b.seen_live = true;
  }
}

bool Channel::remove(const std::shared_ptr<sse::EventSink>& stream) {
  auto it = std::find_if(members_.begin(), members_.end(), [&](const Member& m) { return m.stream == stream; });
  if (it == members_.end()) return false;
  members_.erase(it);
  return true;
}

Member* Channel::member(const std::string& stream_id) {
  auto it = std::find_if(members_.begin(), members_.end(), [&](const Member& m) { return m.stream->id() == stream_id; });
  return it == members_.end() ? nullptr : &*it;
}

std::size_t Channel::restart(const std::string& message_id, const sse::Frame& reset) {
  for (auto& m : members_) {
    // Held frames of the old attempt must not follow the new one's.
    if (m.resume) std::erase_if(m.resume->held, [&](const HeldFrame& f) { return f.message_id == message_id; });
    auto it = m.sent.find(message_id);
    if (it == m.sent.end()) continue;
    m.sent.erase(it);
    deliver(m, message_id, kNotAChunk, reset);
  }
  auto* b = find(message_id);
  if (!b) return 0;
  auto freed = b->bytes;
  b->frames.clear();
  b->bytes = 0;
  b->overflowed = false;
  return freed;
}

Backlog* Channel::finish(const std::string& message_id, SteadyTime now) {
  auto* b = find(message_id);
  if (!b) return nullptr;
  b->finished = true;
  b->finished_at = now;
  return b;
}

std::size_t Channel::drop(const std::string& message_id) {
  std::size_t freed = 0;
  std::erase_if(backlogs_, [&](const Backlog& b) {
    if (b.message_id != message_id) return false;
    freed += b.bytes;
    return true;
  });
  for (auto& m : members_) m.sent.erase(message_id);
  return freed;
}

std::size_t Channel::drop_backlogs() {
  std::size_t freed = 0;
  for (const auto& b : backlogs_) freed += b.bytes;
  backlogs_.clear();
  return freed;
}

}  // namespace chat::hub
