#include "buffer/message_buffer.hpp"

namespace chat::buffer {
namespace {

// What a kept chunk costs beyond its fixed size: its text, the JSON it came
// as, and its metadata and error texts.
std::size_t bytes_of(const protocol::ResponseChunk& c) {
  std::size_t n = c.chunk.size() + c.wire.size() + c.timestamp.size() + c.correlation_id.size();
  if (c.metadata) n += c.metadata->model.size() + c.metadata->finish_reason.size();
  if (c.error) n += c.error->code.size() + c.error->message.size();
  return n;
}

}  // namespace

MessageBuffer::MessageBuffer(std::string session_id, std::string message_id, SteadyTime now)
    : session_id_(std::move(session_id)), message_id_(std::move(message_id)), created_(now), last_activity_(now) {}

void MessageBuffer::restart(std::uint32_t attempt, SteadyTime now) {
  attempt_ = attempt;
  taken_bytes_ = 0;
  last_activity_ = now;
  gap_since_.reset();
  next_id_ = 0;
  final_id_.reset();
  held_.clear();
  held_bytes_ = 0;
  content_.clear();
  content_chunks_ = 0;
  skipped_.clear();
  final_chunk_.reset();
  final_bytes_ = 0;
  replay_requested_at.reset();
  replays_requested = 0;
  delay_noticed_for.reset();
}

PushResult MessageBuffer::push(protocol::ResponseChunk chunk, SteadyTime now, std::size_t max_chunks,
                               std::size_t max_bytes, std::vector<protocol::ResponseChunk>& released, bool may_hold) {
  const auto id = chunk.chunk_id;
  if (id < next_id_ || held_.contains(id)) return PushResult::duplicate;
  if (final_id_ && (id > *final_id_ || chunk.is_final)) return PushResult::after_final;
  if (id >= max_chunks) return PushResult::over_limit;
  if (id != next_id_ && !may_hold) return PushResult::no_room;
  // Every kept chunk counts, whatever its type: the hub keeps a frame of each.
  const auto bytes = bytes_of(chunk);
  if (taken_bytes_ + bytes > max_bytes) return PushResult::too_large;
  taken_bytes_ += bytes;
  // Only a chunk kept says which attempt the buffer follows.
  if (attempt_ == 0) attempt_ = chunk.attempt;
  if (chunk.is_final) {
    // A final chunk below an id we already hold contradicts the contract
    // ("the final chunk has the highest id"): keep the first story.
    if (!held_.empty() && held_.rbegin()->first > id) return PushResult::after_final;
    final_id_ = id;
  }
  last_activity_ = now;
  if (id == next_id_ && held_.empty()) {
    // In order, as almost every chunk is: no need to hold it.
    record(chunk);
    ++next_id_;
    released.push_back(std::move(chunk));
    gap_since_.reset();
    return PushResult::released_or_held;
  }
  held_bytes_ += bytes_of(chunk);
  held_.emplace(id, std::move(chunk));
  release_ready(released);
  if (held_.empty()) gap_since_.reset();
  else if (!gap_since_) gap_since_ = now;
  return PushResult::released_or_held;
}

std::vector<std::uint32_t> MessageBuffer::skip_expired_gap(SteadyTime now, std::chrono::milliseconds timeout,
                                                           std::vector<protocol::ResponseChunk>& released) {
  std::vector<std::uint32_t> missing;
  if (!gap_since_ || held_.empty() || now - *gap_since_ < timeout) return missing;
  const auto first_held = held_.begin()->first;
  for (auto id = next_id_; id < first_held; ++id) missing.push_back(id);
  skipped_.insert(skipped_.end(), missing.begin(), missing.end());
  next_id_ = first_held;
  release_ready(released);
  // Chunks still held sit behind a newer gap: its clock starts now.
  gap_since_ = held_.empty() ? std::nullopt : std::optional<SteadyTime>(now);
  return missing;
}

void MessageBuffer::release_ready(std::vector<protocol::ResponseChunk>& released) {
  for (auto it = held_.begin(); it != held_.end() && it->first == next_id_; it = held_.erase(it)) {
    held_bytes_ -= bytes_of(it->second);
    record(it->second);
    ++next_id_;
    released.push_back(std::move(it->second));
  }
}

void MessageBuffer::record(const protocol::ResponseChunk& c) {
  if (c.chunk_type == protocol::ChunkType::content && !c.chunk.empty()) {
    content_ += c.chunk;
    ++content_chunks_;
  }
  if (c.is_final) {
    final_chunk_ = c;
    final_bytes_ = bytes_of(c);
  }
}

}  // namespace chat::buffer
