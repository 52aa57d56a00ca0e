#include "hub/session_shard.hpp"

#include <algorithm>
#include <unordered_set>
#include <utility>

#include "common/time.hpp"
#include "log/log.hpp"

namespace chat::hub {
namespace {

// Replies dropped from the resume window that a late cursor may still name.
constexpr std::size_t kExpiredIdsKept = 100'000;
// Deleted sessions remembered for streams still on their way (attach).
constexpr std::size_t kEndedSessionsKept = 10'000;

std::string_view incomplete_reason(std::string_view code) {
  if (code == kShutdown) return "the server shut down before the reply finished";
  if (code == "reply_too_large") return "the reply was longer than this server keeps (BUFFER_MAX_REPLY_BYTES)";
  if (code == "buffer_evicted") return "the server had too many replies in flight to keep this one";
  return "the reply did not finish in time";
}

sse::Frame terminal_error_frame(const buffer::FinishedMessage& m) {
  using buffer::MessageStatus;
  switch (m.status) {
    case MessageStatus::error:
      return sse::error_frame(m.message_id, m.error_code.empty() ? "provider_error" : m.error_code,
                              m.error_message.empty() ? "the AI provider failed" : m.error_message);
    case MessageStatus::cancelled: return sse::error_frame(m.message_id, "cancelled", "the reply was cancelled");
    case MessageStatus::incomplete:
      // A chunks_missing error was already sent when the gap was given up.
      if (m.error_code == "chunks_missing") return nullptr;
      return sse::error_frame(m.message_id, m.error_code, incomplete_reason(m.error_code));
    case MessageStatus::complete: return nullptr;
  }
  return nullptr;
}

sse::Frame complete_frame(const buffer::FinishedMessage& m) {
  return sse::complete_frame(m.message_id, m.token_count, m.finish_reason, buffer::to_string(m.status));
}

}  // namespace

SessionShard::SessionShard(const HubOptions& options, ShardHandlers handlers, Clock clock,
                           buffer::ReplySessions* reply_sessions)
    : options_(options),
      handlers_(std::move(handlers)),
      clock_(std::move(clock)),
      reply_sessions_(reply_sessions),
      buffers_(options.buffer),
      broadcasts_(options.broadcast_window, options.broadcast_bytes) {}

void SessionShard::on_chunk(protocol::ResponseChunk chunk, bool broadcast) {
  if (broadcast && !channels_.contains(chunk.session_id) && !buffers_.expects(chunk.message_id)) {
    gauges_.broadcasts_kept.fetch_add(1, std::memory_order_relaxed);
    broadcasts_.keep(std::move(chunk), clock_());
    return;
  }
  push(std::move(chunk));
  process_events();
}

void SessionShard::push(protocol::ResponseChunk chunk) {
  buffers_.push(std::move(chunk), clock_(), events_, !over_memory_share(), reply_sessions_);
}

void SessionShard::expect(const std::string& session_id, const std::string& message_id,
                          const std::string& asked_by) {
  buffers_.expect(session_id, message_id, clock_(), events_, asked_by);
  channel(session_id).backlog(message_id);
  process_events();
}

void SessionShard::forget(const std::string& session_id, const std::string& message_id) {
  if (reply_sessions_) reply_sessions_->remove(message_id);
  buffers_.drop(message_id);
  drop_backlog(session_id, message_id);
  publish_gauges();
}

buffer::CancelResult SessionShard::cancel_unstarted(const std::string& message_id, const std::string& user_id) {
  auto result = buffers_.cancel_unstarted(message_id, user_id, clock_(), events_);
  process_events();
  return result;
}

void SessionShard::drop_backlog(const std::string& session_id, const std::string& message_id) {
  if (auto it = channels_.find(session_id); it != channels_.end()) {
    retained_bytes_ -= it->second.drop(message_id);
    if (it->second.idle()) channels_.erase(it);
  }
}

std::size_t SessionShard::finish_accepted(const char* reason) {
  auto finished = buffers_.finish_accepted(clock_(), events_, reason);
  process_events();
  return finished;
}

void SessionShard::process_events() {
  for (auto& e : events_) {
    if (auto* ready = std::get_if<buffer::ChunkReady>(&e)) {
      const auto& c = ready->chunk;
      if (c.chunk_id == 0)
        if (auto accepted = buffers_.accepted_at(c.message_id))
          gauges_.time_to_first_chunk.observe(std::chrono::duration<double>(clock_() - *accepted).count());
      deliver(c.session_id, c.message_id, c.chunk_id, sse::chunk_frame(c));
    } else if (auto* missing = std::get_if<buffer::ChunksMissing>(&e)) {
      log::warn("chunks_missing", {{"session_id", missing->session_id}, {"message_id", missing->message_id},
                                   {"count", missing->ids.size()}, {"first", missing->ids.front()}});
      deliver(missing->session_id, missing->message_id, kNotAChunk,
              sse::error_frame(missing->message_id, "chunks_missing", "some chunks of this reply never arrived",
                               missing->ids));
    } else if (auto* restarted = std::get_if<buffer::ReplyRestarted>(&e)) {
      log::warn("reply_restarted", {{"session_id", restarted->session_id}, {"message_id", restarted->message_id},
                                    {"attempt", restarted->attempt}});
      // No channel: nothing was shown or kept of the older attempt here.
      if (auto it = channels_.find(restarted->session_id); it != channels_.end())
        retained_bytes_ -= it->second.restart(
            restarted->message_id, sse::reset_frame(restarted->session_id, "reply_restarted", restarted->message_id));
    } else if (auto* done = std::get_if<buffer::MessageFinished>(&e)) {
      finish(std::move(done->message));
    } else if (auto* silent = std::get_if<buffer::ReplySilent>(&e)) {
      drop_backlog(silent->session_id, silent->message_id);
    } else if (auto* abandoned = std::get_if<buffer::ReplyAbandoned>(&e)) {
      drop_backlog(abandoned->session_id, abandoned->message_id);
      if (reply_sessions_) reply_sessions_->ended(abandoned->message_id, clock_());
    } else if (auto* wrong = std::get_if<buffer::WrongSession>(&e)) {
      log::warn("chunk_rejected", {{"session_id", wrong->session_id}, {"message_id", wrong->message_id},
                                   {"error", "the reply belongs to session " + wrong->reply_session_id}});
    }
  }
  events_.clear();
  publish_gauges();
}

void SessionShard::finish(buffer::FinishedMessage m) {
  if (reply_sessions_) reply_sessions_->ended(m.message_id, clock_());
  if (auto error = terminal_error_frame(m)) deliver(m.session_id, m.message_id, kNotAChunk, error);
  deliver(m.session_id, m.message_id, kReplyEnd, complete_frame(m));
  if (auto it = channels_.find(m.session_id); it != channels_.end() && it->second.finish(m.message_id, clock_()))
    finished_order_.emplace_back(m.session_id, m.message_id);
  trim_retained();
  if (m.stored_here) handlers_.reply_finished(std::move(m));
}

void SessionShard::deliver(const std::string& session_id, const std::string& message_id, std::int64_t position,
                           const sse::Frame& frame) {
  auto published = channel(session_id).publish(message_id, position, frame, options_.max_backlog_frames);
  retained_bytes_ += published.kept_bytes;
  if (published.streams_cut > 0) {
    gauges_.catch_ups_cut.add(published.streams_cut);
    log::warn("catch_up_cut", {{"session_id", session_id}, {"held_frames", options_.max_backlog_frames}});
  }
}

void SessionShard::attach(std::shared_ptr<sse::EventSink> stream, std::optional<sse::ResumeCursor> cursor,
                          SteadyTime owner_checked_at) {
  // Gone before it got here: its detach came first and found nothing, so
  // holding it now would keep it (and count it) for ever.
  if (stream->has_ended()) return;
  if (closed_) return stream->close();
  const std::string session_id(stream->session_id());
  if (ended_since(session_id, owner_checked_at)) return stream->close(sse::reset_frame(session_id, "session_deleted"));
  trim_retained();  // the window ends on time, not at the next cleanup
  auto& channel = this->channel(session_id);
  const bool first = !channel.has_members();
  if (cursor && !channel.find(cursor->message_id) && !options_.log_catch_up && expired_.contains(cursor->message_id)) {
    stream->send(sse::reset_frame(session_id, "resume_window_passed"));
    gauges_.resumes_reset.add();
    cursor.reset();
  }
  // A reply this pod does not hold: the log has it (and the order of what
  // follows it), so the stream waits for the log before anything else.
  const bool from_log = cursor && options_.log_catch_up && !channel.find(cursor->message_id);
  Member member{stream, nullptr};
  if (cursor) {
    member.record(cursor->message_id, cursor->chunk_id);
    auto& resume = member.start_resume();
    resume.catching_up = from_log;
    if (from_log) resume.running_at_start = channel.running();
    resume.resumed_at = std::chrono::system_clock::now();
    resume.settled.insert(cursor->message_id);
  }
  auto from_start = [&session_id](const std::string& message_id) {
    return sse::reset_frame(session_id, "reply_resent", message_id);
  };
  if (from_log) {
    channel.members().push_back(std::move(member));
  } else if (!channel.join(std::move(member), cursor, clock_(), options_.late_join_window, from_start)) {
    stream->send(sse::reset_frame(session_id, "reply_too_long_to_replay"));
    if (cursor) gauges_.resumes_reset.add();
  } else if (cursor) {
    gauges_.resumed_from_backlog.add();
  }
  gauges_.streams.fetch_add(1, std::memory_order_relaxed);
  if (first) {
    gauges_.sessions.fetch_add(1, std::memory_order_relaxed);
    // Chunks that went to the broadcast subject before this pod held the session.
    for (auto& c : broadcasts_.take(session_id, clock_())) push(std::move(c));
    process_events();
  }
  if (from_log) handlers_.catch_up_wanted(session_id, stream->id(), *cursor);
  // The first stream of the session here: its running replies may have gone
  // elsewhere until now.
  else if (first) handlers_.replay_wanted(session_id, {});
}

void SessionShard::detach(const std::shared_ptr<sse::EventSink>& stream) {
  auto it = channels_.find(stream->session_id());
  if (it == channels_.end() || !it->second.remove(stream)) return;
  gauges_.streams.fetch_sub(1, std::memory_order_relaxed);
  if (!it->second.has_members()) gauges_.sessions.fetch_sub(1, std::memory_order_relaxed);
  if (it->second.idle()) channels_.erase(it);
}

void SessionShard::fill_from_log(std::vector<protocol::ResponseChunk> chunks) {
  for (auto& reply : group_logged_replies(std::move(chunks))) {
    // One this pod accepted and still waits for (silent so far) is taken whole.
    if (reply.finished && !buffers_.expects(reply.message_id)) continue;
    for (auto& c : reply.chunks) push(std::move(c));
  }
  process_events();
}

void SessionShard::resume_from_log(const std::string& session_id, const std::string& stream_id,
                                   const sse::ResumeCursor& cursor,
                                   std::optional<std::vector<protocol::ResponseChunk>> chunks) {
  auto it = channels_.find(session_id);
  Member* member = it == channels_.end() ? nullptr : it->second.member(stream_id);
  if (!member || member->cut()) return;  // gone (or going) while the log was read
  // A reference, not the iterator: storing may add another session's channel
  // (an eviction ends a reply there), and a rehash voids iterators.
  Channel& channel = it->second;
  auto replies = chunks ? group_logged_replies(std::move(*chunks)) : std::vector<LoggedReply>{};
  auto at = std::find_if(replies.begin(), replies.end(),
                         [&](const LoggedReply& r) { return r.message_id == cursor.message_id; });
  if (at == replies.end()) {
    // Older than the log (or the log is unreachable): the client reloads the history.
    member->stream->send(sse::reset_frame(session_id, chunks ? "resume_window_passed" : "resume_unavailable"));
    member->forget_all();
    if (auto* resume = member->resume()) resume->resumed_at.reset();  // the client starts over from the history
    gauges_.resumes_reset.add();
  } else {
    gauges_.resumed_from_log.add();
  }
  if (at != replies.end() && at->had_attempts) {
    // The client may have seen part of another attempt: it starts this one over.
    member->stream->send(sse::reset_frame(session_id, "reply_restarted", cursor.message_id));
    member->forget(cursor.message_id);
  }
  for (auto r = replies.begin(); at != replies.end() && r != replies.end(); ++r) {
    if (auto* resume = member->resume()) resume->settled.insert(r->message_id);
    if (r != at) {
      // The cursor names one reply. One that finished before it began in the
      // log reached the client whole, and nothing of it goes again; any other
      // (they interleave, or it still runs and its latest chunks reached the
      // client before the log had them) may have reached it in part: it goes
      // again from its start, and the client is told so.
      if (r < at && r->finished && r->last_entry < at->first_entry) {
        member->record(r->message_id, kReplyEnd);
        store_logged(*r);  // the client's old pod may have died holding its end
        continue;
      }
      member->stream->send(sse::reset_frame(session_id, "reply_resent", r->message_id));
      member->forget(r->message_id);
    }
    if (!r->finished) {
      for (auto& c : r->chunks) push(std::move(c));
      continue;
    }
    send_logged_reply(*member, *r);
    store_logged(*r);
  }
  process_events();
  finish_catch_up(channel, *member);
}

// A finished reply read from the log is stored (insert if absent) unless this
// pod stores or stored it itself: the pod that accepted it may be gone.
void SessionShard::store_logged(const LoggedReply& reply) {
  if (buffers_.stored_here(reply.message_id) || buffers_.has(reply.message_id)) return;
  handlers_.reply_finished(reply.to_finished());
  buffers_.stored_from_log(reply.message_id, clock_());
}

// A finished reply from the log, to one stream only: the others of the session
// did not ask for it.
void SessionShard::send_logged_reply(Member& member, const LoggedReply& reply) {
  std::vector<sse::Frame> burst;
  for (const auto& c : reply.chunks)
    if (member.admit(c.message_id, c.chunk_id)) burst.push_back(sse::chunk_frame(c));
  auto finished = reply.to_finished();
  if (auto error = terminal_error_frame(finished); error && member.admit(reply.message_id, kNotAChunk))
    burst.push_back(error);
  if (member.admit(reply.message_id, kReplyEnd)) burst.push_back(complete_frame(finished));
  member.stream->send_backlog(burst);
}

// The stream has what the log had; now what runs here, then what waited.
void SessionShard::finish_catch_up(Channel& channel, Member& member) {
  std::vector<HeldFrame> held;
  std::vector<std::string> running_at_start;
  if (auto* resume = member.resume()) {
    resume->catching_up = false;
    held = std::exchange(resume->held, {});
    running_at_start = std::exchange(resume->running_at_start, {});
  }
  std::vector<sse::Frame> burst;
  for (const auto& f : held)
    if (f.restarts) member.take(f.message_id, f.position, f.frame, burst);
  const auto from_backlog = burst.size();
  channel.take_running(member, running_at_start, burst);
  // A notice is one frame shared by the backlog and the held: sent once.
  std::unordered_set<const sse::EncodedFrame*> sent;
  for (auto f = burst.begin() + static_cast<std::ptrdiff_t>(from_backlog); f != burst.end(); ++f) sent.insert(f->get());
  for (const auto& f : held)
    if (!f.restarts && !sent.contains(f.frame.get())) member.take(f.message_id, f.position, f.frame, burst);
  member.stream->send_backlog(burst);
}

std::vector<std::string> SessionShard::end_session(const std::string& session_id) {
  remember_ended(session_id);
  auto dropped = buffers_.drop_session(session_id, clock_());
  if (reply_sessions_)
    for (const auto& id : dropped) reply_sessions_->ended(id, clock_());
  publish_gauges();
  auto it = channels_.find(session_id);
  if (it == channels_.end()) return dropped;
  auto last = sse::reset_frame(session_id, "session_deleted");
  for (const auto& m : it->second.members()) m.stream->close(last);
  retained_bytes_ -= it->second.drop_backlogs();
  if (it->second.idle()) channels_.erase(it);
  return dropped;
}

void SessionShard::close_all(const std::function<sse::Frame()>& last) {
  closed_ = true;
  for (auto& [id, channel] : channels_)
    for (const auto& m : channel.members()) m.stream->close(last());
}

void SessionShard::check_gaps() {
  auto now = clock_();
  if (auto reconnects = handlers_.bus_reconnects(); reconnects != bus_reconnects_seen_) {
    bus_reconnects_seen_ = reconnects;
    buffers_.ask_again_now();
  }
  auto is_watched = [this](const std::string& session_id) { return watched(session_id); };
  for (const auto& [session, message] : buffers_.stalled(now, options_.replay_after, options_.replay_after * 2, is_watched))
    handlers_.replay_wanted(session, message);
  for (const auto& d : buffers_.newly_delayed(now, options_.delay_notice_after, is_watched)) {
    gauges_.delays_announced.add();
    deliver(d.session_id, d.message_id, kNotAChunk, sse::delayed_frame(d.message_id, d.next_chunk_id, d.waited.count()));
  }
  buffers_.check_gaps(now, events_);
  process_events();
}

void SessionShard::cleanup() {
  buffers_.expire_old(clock_(), events_, [this](const std::string& session_id) { return watched(session_id); });
  if (reply_sessions_) reply_sessions_->forget_before(clock_() - 2 * options_.buffer.max_age);
  process_events();
  trim_retained();
  publish_gauges();
}

// A slice is every kHeartbeatSlices-th bucket of the channel map: no hashing,
// and a rehash between two calls only moves a stream's ping within a round.
void SessionShard::heartbeat() {
  auto frame = sse::ping_frame(unix_now());
  const auto slice = heartbeat_slice_++ % kHeartbeatSlices;
  for (auto bucket = slice; bucket < channels_.bucket_count(); bucket += kHeartbeatSlices)
    for (auto it = channels_.begin(bucket); it != channels_.end(bucket); ++it)
      for (const auto& m : it->second.members()) m.stream->send(frame);
}

std::size_t SessionShard::owed() const {
  return buffers_.owed([this](const std::string& session_id) { return watched(session_id); });
}

Channel& SessionShard::channel(const std::string& session_id) { return find_or_add(channels_, session_id); }

bool SessionShard::watched(const std::string& session_id) const {
  auto it = channels_.find(session_id);
  return it != channels_.end() && it->second.has_members();
}

// Drops the oldest finished replies while over the byte budget or the window.
void SessionShard::trim_retained() {
  auto now = clock_();
  while (!finished_order_.empty()) {
    auto [session_id, message_id] = finished_order_.front();
    auto it = channels_.find(session_id);
    Backlog* b = it == channels_.end() ? nullptr : it->second.find(message_id);
    bool too_old = b && now - b->finished_at >= options_.replay_window;
    if (b && !too_old && retained_bytes_ <= options_.replay_max_bytes && !over_memory_share()) break;
    finished_order_.pop_front();
    if (!b) continue;
    retained_bytes_ -= it->second.drop(message_id);
    remember_expired(message_id);
    if (it->second.idle()) channels_.erase(it);
  }
}

void SessionShard::remember_expired(const std::string& message_id) {
  if (!expired_.insert(message_id).second) return;
  expired_order_.push_back(message_id);
  if (expired_order_.size() > kExpiredIdsKept) {
    expired_.erase(expired_order_.front());
    expired_order_.pop_front();
  }
}

void SessionShard::remember_ended(const std::string& session_id) {
  auto [it, added] = ended_sessions_.insert_or_assign(session_id, clock_());
  if (!added) return;
  ended_order_.push_back(session_id);
  if (ended_order_.size() > kEndedSessionsKept) {
    ended_sessions_.erase(ended_order_.front());
    ended_order_.pop_front();
  }
}

bool SessionShard::ended_since(const std::string& session_id, SteadyTime checked_at) const {
  auto it = ended_sessions_.find(session_id);
  return it != ended_sessions_.end() && it->second >= checked_at;
}

std::size_t SessionShard::reply_bytes() const { return retained_bytes_ + buffers_.held_bytes(); }

bool SessionShard::over_memory_share() const {
  return options_.reply_memory_budget != 0 &&
         reply_bytes() > options_.reply_memory_budget / std::max<std::size_t>(1, options_.shards);
}

void SessionShard::publish_gauges() {
  gauges_.buffers.store(buffers_.size(), std::memory_order_relaxed);
  gauges_.accepted_buffers.store(buffers_.accepted(), std::memory_order_relaxed);
  gauges_.reply_bytes.store(reply_bytes(), std::memory_order_relaxed);
}

}  // namespace chat::hub
