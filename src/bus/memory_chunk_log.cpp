#include "bus/memory_chunk_log.hpp"

#include <boost/asio/post.hpp>

namespace chat::bus {

MemoryChunkLog::MemoryChunkLog(boost::asio::any_io_executor executor, std::chrono::milliseconds max_age,
                               std::size_t max_bytes)
    : executor_(std::move(executor)), max_age_(max_age), max_bytes_(max_bytes) {}

void MemoryChunkLog::append(const std::string& session_id, const std::string& message_id, std::string entry_id,
                            const std::vector<std::string>& payloads, PublishCallback done) {
  std::size_t bytes = 0;
  for (const auto& p : payloads) bytes += p.size();
  {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    if (ids_.insert(entry_id).second) {
      bytes_ += bytes;
      ++per_session_[session_id];
      entries_.push_back(Entry{session_id, message_id, std::move(entry_id), payloads, bytes, now});
    }
    trim_locked(now);
  }
  if (done) boost::asio::post(executor_, [done = std::move(done)] { done({}); });
}

void MemoryChunkLog::read(const std::string& session_id, const std::string& message_id, LogReadCallback done) {
  std::vector<std::string> out;
  {
    std::lock_guard lock(mutex_);
    trim_locked(std::chrono::steady_clock::now());
    if (per_session_.contains(session_id))
      for (const auto& e : entries_)
        if (e.session_id == session_id && (message_id.empty() || e.message_id == message_id))
          out.insert(out.end(), e.payloads.begin(), e.payloads.end());
  }
  boost::asio::post(executor_, [done = std::move(done), out = std::move(out)]() mutable { done({}, std::move(out)); });
}

void MemoryChunkLog::trim_locked(std::chrono::steady_clock::time_point now) {
  while (!entries_.empty() && (bytes_ > max_bytes_ || now - entries_.front().at >= max_age_)) {
    auto& e = entries_.front();
    bytes_ -= e.bytes;
    ids_.erase(e.entry_id);
    if (--per_session_[e.session_id] == 0) per_session_.erase(e.session_id);
    entries_.pop_front();
  }
}

}  // namespace chat::bus
