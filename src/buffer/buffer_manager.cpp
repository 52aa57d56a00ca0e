#include "buffer/buffer_manager.hpp"

#include <algorithm>

namespace chat::buffer {

std::string_view to_string(MessageStatus s) {
  switch (s) {
    case MessageStatus::complete: return "complete";
    case MessageStatus::error: return "error";
    case MessageStatus::cancelled: return "cancelled";
    case MessageStatus::incomplete: return "incomplete";
  }
  return "incomplete";
}

void BufferManager::push(protocol::ResponseChunk chunk, SteadyTime now, std::vector<Event>& out, bool memory_to_spare,
                         ReplySessions* pod_sessions) {
  counters_.chunks_received.add();
  // Before it can open a buffer or start a reply over: a chunk never kept
  // must change nothing.
  if (chunk.chunk_id >= limits_.max_chunks) {
    counters_.over_limit_dropped.add();
    return;
  }
  auto it = buffers_.find(chunk.message_id);
  if (it == buffers_.end()) {
    if (finished_.contains(chunk.message_id)) {
      counters_.late_dropped.add();
      return;
    }
    std::string reply_session = chunk.session_id;
    if (const auto* silent = accepted_silent_.find(chunk.message_id)) {
      reply_session = silent->session_id;
    } else if (!memory_to_spare) {
      counters_.no_room_dropped.add();
      return;
    }
    if (pod_sessions) reply_session = pod_sessions->claim(chunk.message_id, reply_session, now);
    if (reply_session != chunk.session_id) {
      counters_.wrong_session_dropped.add();
      out.push_back(WrongSession{chunk.session_id, chunk.message_id, reply_session});
      return;
    }
    const auto silent = accepted_silent_.take(chunk.message_id);
    const bool room = make_room(now, out, !silent);
    it = buffers_.try_emplace(chunk.message_id, chunk.session_id, chunk.message_id, now).first;
    touch(it->second);
    if (silent) mark_accepted(it->second, silent->accepted_at, silent->asked_by);
    if (!room) {
      // Every buffer holds a reply accepted here: this one, another pod's,
      // ends here at once, and that pod stores it.
      counters_.buffers_evicted.add();
      counters_.no_room_dropped.add();
      return evict(it, now, out);
    }
  }
  auto& buffer = it->second;
  // A reply belongs to the session it was first seen with (accepted for, or
  // its first chunk's): a chunk naming another cannot carry it there.
  if (chunk.session_id != buffer.session_id()) {
    counters_.wrong_session_dropped.add();
    out.push_back(WrongSession{chunk.session_id, chunk.message_id, buffer.session_id()});
    return;
  }
  const auto footprint_before = buffer.footprint();  // a restart below clears it
  const bool had_any = buffer.received_any();
  if (buffer.attempt() != 0 && chunk.attempt < buffer.attempt()) {
    counters_.stale_attempts_dropped.add();
    return;
  }
  if (buffer.attempt() != 0 && chunk.attempt > buffer.attempt()) {
    // The new attempt begins at chunk 0: one of its later chunks that this
    // buffer could not hold must not wipe the reply it follows.
    if (chunk.chunk_id != 0 && !memory_to_spare && !buffer.accepted_here()) {
      counters_.no_room_dropped.add();
      return;
    }
    buffer.restart(chunk.attempt, now);
    touch(buffer);
    if (had_any) {
      counters_.replies_restarted.add();
      out.push_back(ReplyRestarted{buffer.session_id(), buffer.message_id(), chunk.attempt});
    }
  }
  scratch_.clear();
  const bool in_turn = chunk.chunk_id == buffer.next_id();
  auto result = buffer.push(std::move(chunk), now, limits_.max_chunks, limits_.max_reply_bytes, scratch_,
                            memory_to_spare || buffer.accepted_here());
  held_bytes_ = held_bytes_ - footprint_before + buffer.footprint();
  if (had_any && !buffer.received_any()) --streaming_;
  if (!had_any && buffer.received_any()) ++streaming_;
  switch (result) {
    case PushResult::duplicate: counters_.duplicates_dropped.add(); return;
    case PushResult::after_final: counters_.late_dropped.add(); return;
    case PushResult::over_limit: counters_.over_limit_dropped.add(); return;
    case PushResult::no_room: counters_.no_room_dropped.add(); return;
    case PushResult::too_large:
      // Ends here with what it had; another pod's is stored whole by that pod (or cut there too).
      counters_.over_limit_dropped.add();
      return finish(it->first, now, out, "reply_too_large", buffer.accepted_here());
    case PushResult::released_or_held: break;
  }
  touch(buffer);
  if (!in_turn) counters_.chunks_reordered.add();
  buffer.replays_requested = 0;  // a silent reply's asks back off again from the start
  release(scratch_, out);
  if (buffer.finished()) finish(it->first, now, out, nullptr);
}

void BufferManager::expect(const std::string& session_id, const std::string& message_id, SteadyTime now,
                           std::vector<Event>& out, const std::string& asked_by) {
  if (finished_.contains(message_id)) return;
  auto it = buffers_.find(message_id);
  if (it == buffers_.end()) {
    make_room(now, out, false);
    it = buffers_.try_emplace(message_id, session_id, message_id, now).first;
    touch(it->second);
  }
  mark_accepted(it->second, now, asked_by);
}

void BufferManager::mark_accepted(MessageBuffer& buffer, SteadyTime at, const std::string& asked_by) {
  if (buffer.accepted_here()) return;
  buffer.accepted_at = at;
  buffer.asked_by = asked_by;
  ++accepted_;
  touch(buffer);
}

void BufferManager::touch(MessageBuffer& buffer) {
  buffer.by_activity.unlink();
  (buffer.accepted_here() ? accepted_by_activity_ : foreign_by_activity_).push_back(buffer);
}

void BufferManager::stored_from_log(const std::string& message_id, SteadyTime now) {
  accepted_silent_.take(message_id);  // a silent reply of this pod's, whole in the log: nothing left to give up
  finished_.take(message_id);
  finished_.remember(message_id, now, true);
}

std::size_t BufferManager::owed(const std::function<bool(const std::string&)>& watched) const {
  return static_cast<std::size_t>(std::count_if(buffers_.begin(), buffers_.end(), [&](const auto& kv) {
    return kv.second.accepted_here() || (kv.second.received_any() && watched(kv.second.session_id()));
  }));
}

void BufferManager::check_gaps(SteadyTime now, std::vector<Event>& out) {
  std::vector<std::string> done;
  for (auto& [id, b] : buffers_) {
    scratch_.clear();
    const auto footprint_before = b.footprint();
    auto missing = b.skip_expired_gap(now, limits_.missing_chunk_timeout, scratch_);
    held_bytes_ = held_bytes_ - footprint_before + b.footprint();
    if (missing.empty()) continue;
    counters_.chunks_skipped.add(missing.size());
    out.push_back(ChunksMissing{b.session_id(), b.message_id(), std::move(missing)});
    release(scratch_, out);
    if (b.finished()) done.push_back(id);
  }
  for (const auto& id : done) finish(id, now, out, nullptr);
}

void BufferManager::expire_old(SteadyTime now, std::vector<Event>& out,
                               const std::function<bool(const std::string&)>& watched) {
  std::vector<std::string> old;
  for (const auto& [id, b] : buffers_)
    if (now - b.created() >= limits_.max_age) old.push_back(id);
  for (const auto& id : old) {
    auto it = buffers_.find(id);
    if (!it->second.received_any() && it->second.accepted_at) {
      // An expected reply (accepted here) that sent no chunk.
      counters_.never_arrived.add();
      accepted_silent_.remember(id, now, Silent{*it->second.accepted_at, it->second.session_id(), it->second.asked_by},
                                [&](const std::string& gone_id, Silent silent) {
                                  give_up_silent(gone_id, std::move(silent), now, out);
                                });
      out.push_back(ReplySilent{it->second.session_id(), id});
      erase(it);
      continue;
    }
    if (!it->second.accepted_here() && !watched(it->second.session_id())) {
      counters_.buffers_abandoned.add();
      finished_.remember(id, now, false);
      out.push_back(ReplyAbandoned{it->second.session_id(), id});
      if (it->second.received_any()) --streaming_;
      erase(it);
      continue;
    }
    counters_.buffers_expired.add();
    finish(id, now, out, "reply_timeout");
  }
  finished_.forget_before(now - limits_.max_age);
  accepted_silent_.forget_before(now - limits_.max_age, [&](const std::string& id, Silent silent) {
    give_up_silent(id, std::move(silent), now, out);
  });
}

// An accepted reply with no chunk for twice max_age (its empty buffer went at
// the first), or pushed out of the silent ones by their bound (a shard's
// max_buffers): it ends, empty, as a reply that ran too long would. Its user is
// not left waiting for good, its worker (should one still hold it) is told to
// stop, and its places in the pod's limits are freed.
void BufferManager::give_up_silent(const std::string& message_id, Silent silent, SteadyTime now,
                                   std::vector<Event>& out) {
  // Counted once, as never_arrived, when its buffer went.
  end_unstarted(message_id, std::move(silent), now, out, MessageStatus::incomplete, "error", "reply_timeout");
}

CancelResult BufferManager::cancel_unstarted(const std::string& message_id, const std::string& user_id,
                                             SteadyTime now, std::vector<Event>& out) {
  Silent silent;
  if (auto it = buffers_.find(message_id); it != buffers_.end()) {
    const MessageBuffer& b = it->second;
    if (!b.accepted_here() || b.received_any() || b.asked_by.empty()) return CancelResult::not_held;
    if (b.asked_by != user_id) return CancelResult::other_user;
    silent = Silent{*b.accepted_at, b.session_id(), b.asked_by};
    erase(it);
  } else if (const Silent* s = accepted_silent_.find(message_id); s && !s->asked_by.empty()) {
    if (s->asked_by != user_id) return CancelResult::other_user;
    silent = std::move(*accepted_silent_.take(message_id));
  } else {
    return CancelResult::not_held;
  }
  end_unstarted(message_id, std::move(silent), now, out, MessageStatus::cancelled, "cancelled", {});
  return CancelResult::cancelled;
}

void BufferManager::end_unstarted(const std::string& message_id, Silent silent, SteadyTime now,
                                  std::vector<Event>& out, MessageStatus status, std::string finish_reason,
                                  std::string error_code) {
  FinishedMessage m;
  m.session_id = std::move(silent.session_id);
  m.message_id = message_id;
  m.status = status;
  m.finish_reason = std::move(finish_reason);
  m.error_code = std::move(error_code);
  m.duration = std::chrono::duration_cast<std::chrono::milliseconds>(now - silent.accepted_at);
  m.asked_by = std::move(silent.asked_by);
  m.unstarted = true;
  finished_.remember(message_id, now, true);
  out.push_back(MessageFinished{std::move(m)});
}

std::vector<std::pair<std::string, std::string>> BufferManager::stalled(
    SteadyTime now, std::chrono::milliseconds after, std::chrono::milliseconds every,
    const std::function<bool(const std::string&)>& watched) {
  std::vector<std::pair<std::string, std::string>> stalled;
  for (auto& [id, b] : buffers_) {
    auto waiting_since = b.received_any() ? b.waiting_since() : std::optional<SteadyTime>(b.created());
    if (!waiting_since || now - *waiting_since < after) continue;
    if (!b.received_any() && !watched(b.session_id())) continue;
    // Silent after its last chunk: worth asking only for someone who waits for it.
    if (b.received_any() && !b.gap_since() && !b.accepted_here() && !watched(b.session_id())) continue;
    // A gap is a chunk known to be missing: asked about at the plain interval.
    // A silent reply (nothing yet, or nothing after its last chunk) most likely
    // waits in the work queue or for its provider: asking again and again (each
    // ask may read the chunk log) would only add load. Its interval doubles
    // with each ask since its last chunk, up to 16 times.
    const auto interval = b.gap_since() ? every : every * (1 << std::min<std::uint32_t>(b.replays_requested, 4));
    if (b.replay_requested_at && now - *b.replay_requested_at < interval) continue;
    b.replay_requested_at = now;
    ++b.replays_requested;
    counters_.replays_requested.add();
    stalled.emplace_back(b.session_id(), id);
  }
  return stalled;
}

void BufferManager::ask_again_now() {
  for (auto& [id, b] : buffers_) {
    b.replay_requested_at.reset();
    b.replays_requested = 0;
  }
}

std::vector<BufferManager::Delay> BufferManager::newly_delayed(SteadyTime now, std::chrono::milliseconds after,
                                                               const std::function<bool(const std::string&)>& watched) {
  std::vector<Delay> out;
  for (auto& [id, b] : buffers_) {
    auto since = b.received_any() ? b.waiting_since() : std::optional<SteadyTime>(b.created());
    if (!since || now - *since < after || b.delay_noticed_for == since || !watched(b.session_id())) continue;
    b.delay_noticed_for = since;
    out.push_back(Delay{b.session_id(), id, b.next_id(),
                        std::chrono::duration_cast<std::chrono::milliseconds>(now - *since)});
  }
  return out;
}

std::optional<SteadyTime> BufferManager::accepted_at(const std::string& message_id) const {
  auto it = buffers_.find(message_id);
  if (it == buffers_.end()) return std::nullopt;
  return it->second.accepted_at;
}

void BufferManager::drop(const std::string& message_id) {
  auto it = buffers_.find(message_id);
  if (it == buffers_.end()) return;
  if (it->second.received_any()) --streaming_;
  erase(it);
}

std::size_t BufferManager::finish_accepted(SteadyTime now, std::vector<Event>& out, const char* reason) {
  std::vector<std::string> accepted;
  for (const auto& [id, b] : buffers_)
    if (b.accepted_here()) accepted.push_back(id);
  for (const auto& id : accepted) finish(id, now, out, reason);
  return accepted.size();
}

std::vector<std::string> BufferManager::drop_session(const std::string& session_id, SteadyTime now) {
  std::vector<std::string> dropped;
  for (auto it = buffers_.begin(); it != buffers_.end();) {
    if (it->second.session_id() != session_id) {
      ++it;
      continue;
    }
    dropped.push_back(it->first);
    finished_.remember(it->first, it->second.last_activity(), true);  // nothing of a deleted session is stored
    if (it->second.received_any()) --streaming_;
    it = erase(it);
  }
  // Their buffers went at max_age, but they may still run (a long wait in the
  // work queue): the caller cancels them like the others.
  for (auto& id : accepted_silent_.take_if([&](const Silent& s) { return s.session_id == session_id; })) {
    finished_.remember(id, now, true);
    dropped.push_back(std::move(id));
  }
  return dropped;
}

void BufferManager::release(std::vector<protocol::ResponseChunk>& released, std::vector<Event>& out) {
  counters_.chunks_released.add(released.size());
  for (auto& c : released) out.push_back(ChunkReady{std::move(c)});
  released.clear();
}

void BufferManager::finish(const std::string& message_id, SteadyTime now, std::vector<Event>& out, const char* reason,
                           bool stored_here) {
  auto it = buffers_.find(message_id);
  if (it == buffers_.end()) return;
  const MessageBuffer& b = it->second;
  FinishedMessage m;
  m.session_id = b.session_id();
  m.message_id = b.message_id();
  m.content = b.content();
  m.missing_chunks = b.skipped_ids();
  m.duration = std::chrono::duration_cast<std::chrono::milliseconds>(now - b.created());
  m.token_count = static_cast<std::int64_t>(b.content_chunks());
  if (const auto& f = b.final_chunk()) {
    m.final_received = true;
    m.correlation_id = f->correlation_id;
    if (f->metadata) {
      if (f->metadata->tokens_used) m.token_count = *f->metadata->tokens_used;
      m.finish_reason = f->metadata->finish_reason;
      m.model = f->metadata->model;
    }
    if (f->error) {
      m.error_code = f->error->code;
      m.error_message = f->error->message;
    }
    // An error chunk ends the reply in error, whatever reason it names.
    if (f->chunk_type == protocol::ChunkType::error) m.finish_reason = "error";
    else if (m.finish_reason.empty()) m.finish_reason = "stop";
    if (m.finish_reason == "cancelled") m.status = MessageStatus::cancelled;
    else if (m.finish_reason == "error" || f->chunk_type == protocol::ChunkType::error) m.status = MessageStatus::error;
  } else {
    m.finish_reason = "error";
  }
  if (reason) {
    m.status = MessageStatus::incomplete;
    m.error_code = reason;
  } else if (!m.missing_chunks.empty() && m.status == MessageStatus::complete) {
    m.status = MessageStatus::incomplete;
    m.error_code = "chunks_missing";
  }
  m.stored_here = stored_here;
  m.asked_by = b.asked_by;
  finished_.remember(message_id, now, stored_here);
  if (b.received_any()) --streaming_;
  erase(it);
  out.push_back(MessageFinished{std::move(m)});
}

BufferManager::Buffers::iterator BufferManager::erase(Buffers::iterator it) {
  held_bytes_ -= it->second.footprint();
  if (it->second.accepted_here()) --accepted_;
  return buffers_.erase(it);
}

// The least recently active buffer makes room, another pod's before one
// accepted here: that pod stores its reply whole, while this pod's copy of a
// reply accepted here is the one the store gets.
bool BufferManager::make_room(SteadyTime now, std::vector<Event>& out, bool for_foreign) {
  if (buffers_.size() < limits_.max_buffers) return true;
  auto& oldest = !foreign_by_activity_.empty() ? foreign_by_activity_ : accepted_by_activity_;
  if (oldest.empty()) return true;
  if (oldest.front().accepted_here() && for_foreign) return false;
  counters_.buffers_evicted.add();
  evict(buffers_.find(oldest.front().message_id()), now, out);
  return true;
}

// Its streams see it end. Another pod's reply is not stored here: that pod
// stores it whole, and the store keeps the first row written.
void BufferManager::evict(Buffers::iterator it, SteadyTime now, std::vector<Event>& out) {
  finish(std::string(it->first), now, out, "buffer_evicted", it->second.accepted_here());
}

}  // namespace chat::buffer
