#include "hub/session_channel.hpp"

#include <algorithm>
#include <span>

#include "sse/events.hpp"

namespace chat::hub {

Progress& Member::progress_made() {
  if (!progress) progress = std::make_unique<Progress>();
  return *progress;
}

void Member::free_if_empty() {
  if (progress && progress->sent.empty() && !progress->resume) progress.reset();
}

Resume& Member::start_resume() {
  auto& p = progress_made();
  if (!p.resume) p.resume = std::make_unique<Resume>();
  return *p.resume;
}

void Member::record(const std::string& message_id, std::int64_t position) {
  progress_made().sent.insert_or_assign(message_id, position);
}

bool Member::forget(const std::string& message_id) {
  if (!progress || progress->sent.erase(message_id) == 0) return false;
  free_if_empty();
  return true;
}

void Member::forget_all() {
  if (!progress) return;
  progress->sent.clear();
  free_if_empty();
}

bool Member::admit(const std::string& message_id, std::int64_t position) {
  auto [it, fresh] = progress_made().sent.try_emplace(message_id, kNotAChunk);
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
  auto* r = resume();
  if (!r || !r->resumed_at || position < 0 || !r->settled.insert(message_id).second) return false;
  if (position == 0 && origin >= *r->resumed_at) return false;  // began after the resume: all new to the client
  forget(message_id);
  return true;
}

bool Member::joins_midway(const std::string& message_id, std::int64_t position) {
  auto* r = resume();
  if (!r || r->resumed_at || position <= 0) return false;
  auto it = progress->sent.find(message_id);
  if (it != progress->sent.end() && it->second != kNotAChunk) return false;  // it follows the reply already
  record(message_id, kChunksSkipped);
  return true;
}

void Member::take(const std::string& message_id, std::int64_t position, const sse::Frame& frame,
                  std::vector<sse::Frame>& out) {
  if (joins_midway(message_id, position)) return;
  if (needs_reset(message_id, position, frame->origin))
    out.push_back(sse::reset_frame(stream->session_id(), "reply_resent", message_id));
  if (admit(message_id, position)) out.push_back(frame);
}

void Channel::free_replies_if_empty() {
  if (replies_ && replies_->backlogs.empty()) replies_.reset();
}

Backlog& Channel::backlog(const std::string& message_id) {
  if (auto* b = find(message_id)) return *b;
  if (!replies_) replies_ = std::make_unique<Replies>();
  auto seq = ++replies_->seq;
  return replies_->backlogs.emplace_back(Backlog{message_id, {}, 0, false, false, false, false, {}, seq, seq});
}

Backlog* Channel::find(const std::string& message_id) {
  if (!replies_) return nullptr;
  for (auto& b : replies_->backlogs)
    if (b.message_id == message_id) return &b;
  return nullptr;
}

bool Channel::deliver(Member& member, const std::string& message_id, std::int64_t position, const sse::Frame& frame,
                      std::size_t max_held) {
  if (member.catching_up()) return hold(member, HeldFrame{message_id, position, frame}, max_held);
  std::vector<sse::Frame> out;
  member.take(message_id, position, frame, out);
  for (auto& f : out) member.stream->send(f);
  return false;
}

// A stream whose log read takes long while its session streams fast would
// hold without end. Past `max_held` it is closed instead: the client comes
// back with its cursor, and by then the log has what it missed.
bool Channel::hold(Member& member, HeldFrame frame, std::size_t max_held) {
  auto& resume = *member.resume();
  if (resume.cut) return false;
  if (resume.held.size() < max_held) {
    resume.held.push_back(std::move(frame));
    return false;
  }
  resume.cut = true;
  resume.held = {};
  member.stream->close();
  return true;
}

Published Channel::publish(const std::string& message_id, std::int64_t position, const sse::Frame& frame,
                           std::size_t max_frames) {
  auto& b = backlog(message_id);
  b.last_seq = ++replies_->seq;
  Published published;
  if (b.frames.size() < max_frames) {
    b.frames.emplace_back(position, frame);
    b.bytes += frame->size();
    published.kept_bytes = frame->size();
  } else {
    b.overflowed = true;
  }
  if (members_.empty()) return published;
  b.seen_live = true;
  for (auto& m : members_) published.streams_cut += deliver(m, message_id, position, frame, max_frames) ? 1 : 0;
  return published;
}

bool Channel::join(Member member, const std::optional<ResumeCursor>& cursor, SteadyTime now,
                   std::chrono::milliseconds late_join_window,
                   const std::function<sse::Frame(const std::string& message_id)>& from_start) {
  std::vector<sse::Frame> burst;
  // Through Member::take: a resumed stream's reply that the cursor does not
  // settle (it may have reached the client in part elsewhere) starts with a
  // reset and goes from its start, once.
  auto take = [&](Backlog& b, std::size_t from = 0) {
    for (auto f = b.frames.begin() + static_cast<std::ptrdiff_t>(from); f != b.frames.end(); ++f)
      member.take(b.message_id, f->first, f->second, burst);
    b.seen_live = true;
  };
  bool servable = true;
  auto list = replies_ ? std::span<Backlog>(replies_->backlogs) : std::span<Backlog>();
  auto resume_at = cursor ? std::find_if(list.begin(), list.end(),
                                         [&](const Backlog& b) { return b.message_id == cursor->message_id; })
                          : list.end();
  if (resume_at != list.end()) {
    // Everything after the cursor: the rest of its reply, then every later one.
    auto cursor_chunk = std::find_if(resume_at->frames.begin(), resume_at->frames.end(), [&](const auto& f) {
      return f.first == static_cast<std::int64_t>(cursor->chunk_id);
    });
    const bool has_cursor_chunk = cursor_chunk != resume_at->frames.end();
    // Frames past the bound were not kept: from the cursor on, some are
    // missing, wherever the cursor is.
    if (resume_at->overflowed) {
      servable = false;
    } else {
      if (resume_at->restarted) {
        // The client may have had part of another attempt: this one from its start.
        burst.push_back(sse::reset_frame(member.stream->session_id(), "reply_restarted", resume_at->message_id));
        member.forget(resume_at->message_id);
        take(*resume_at);
      } else {
        // After the cursor's chunk only: a notice from before it reached the client then.
        take(*resume_at, has_cursor_chunk ? static_cast<std::size_t>(cursor_chunk - resume_at->frames.begin()) + 1 : 0);
      }
      for (auto b = list.begin(); b != list.end(); ++b) {
        if (b == resume_at) continue;
        if (auto* r = member.resume()) r->settled.insert(b->message_id);
        // Ended before the cursor's reply began: the client had all of it. One
        // still running may have reached the client further on its old pod
        // than here: it goes again from its start, like any other.
        if (b < resume_at && b->finished && b->last_seq < resume_at->first_seq) continue;
        if (b->overflowed) {
          servable = false;
          continue;
        }
        burst.push_back(from_start(b->message_id));
        member.forget(b->message_id);
        take(*b);
      }
    }
  } else {
    // A fresh stream: replies still running, and finished ones nobody saw (the
    // page posted first and subscribed a moment later).
    for (auto& b : list) {
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

std::vector<std::string> Channel::running() const {
  std::vector<std::string> ids;
  if (!replies_) return ids;
  for (const auto& b : replies_->backlogs)
    if (!b.finished) ids.push_back(b.message_id);
  return ids;
}

void Channel::take_running(Member& member, const std::vector<std::string>& also, std::vector<sse::Frame>& burst) {
  if (!replies_) return;
  bool overflowed = false;
  for (auto& b : replies_->backlogs) {
    if (b.finished && std::find(also.begin(), also.end(), b.message_id) == also.end()) continue;
    b.seen_live = true;
    // Its frames past the bound are gone: the kept ones would end in a gap.
    if (b.overflowed) {
      overflowed = true;
      continue;
    }
    for (const auto& [position, frame] : b.frames) member.take(b.message_id, position, frame, burst);
  }
  if (overflowed) burst.push_back(sse::reset_frame(member.stream->session_id(), "reply_too_long_to_replay"));
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
    // Held frames of the old attempt must not follow the new one's; a reset
    // held at an earlier restart stays (the client still has to start over).
    if (auto* r = m.resume())
      std::erase_if(r->held, [&](const HeldFrame& f) { return f.message_id == message_id && !f.restarts; });
    if (!m.forget(message_id)) continue;
    // The reset takes the place of the frames just erased: no bound needed.
    if (auto* r = m.resume(); r && r->catching_up) {
      if (!r->cut) r->held.push_back(HeldFrame{message_id, kNotAChunk, reset, true});
    } else {
      deliver(m, message_id, kNotAChunk, reset, std::numeric_limits<std::size_t>::max());
    }
  }
  auto* b = find(message_id);
  if (!b) return 0;
  b->restarted = true;
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
  if (replies_) {
    std::erase_if(replies_->backlogs, [&](const Backlog& b) {
      if (b.message_id != message_id) return false;
      freed += b.bytes;
      return true;
    });
    free_replies_if_empty();
  }
  for (auto& m : members_) {
    // Gone for good: nothing of it comes again, so a resumed stream need not
    // remember it as settled either (it would, for every reply, for as long
    // as it stays open).
    if (auto* r = m.resume()) r->settled.erase(message_id);
    m.forget(message_id);
  }
  return freed;
}

std::size_t Channel::drop_backlogs() {
  std::size_t freed = 0;
  if (!replies_) return freed;
  for (const auto& b : replies_->backlogs) freed += b.bytes;
  replies_.reset();
  return freed;
}

}  // namespace chat::hub
