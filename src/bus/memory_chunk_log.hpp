#pragma once
// The chunk log of the embedded default: the in-process worker appends, the pod
// reads; bounded by age and bytes like the JetStream log.

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "bus/chunk_log.hpp"

namespace chat::bus {

class MemoryChunkLog final : public ChunkLog {
 public:
  MemoryChunkLog(boost::asio::any_io_executor executor, std::chrono::milliseconds max_age, std::size_t max_bytes);

  void append(const std::string& session_id, const std::string& message_id, std::string entry_id,
              const std::vector<std::string>& payloads, PublishCallback done = {}) override;
  void read(const std::string& session_id, const std::string& message_id, LogReadCallback done) override;
  ComponentStatus status() const override { return {"memory", true, true}; }

 private:
  struct Entry {
    std::string session_id;
    std::string message_id;
    std::string entry_id;
    std::vector<std::string> payloads;
    std::size_t bytes;
    std::chrono::steady_clock::time_point at;
  };
  void trim_locked(std::chrono::steady_clock::time_point now);

  boost::asio::any_io_executor executor_;
  std::chrono::milliseconds max_age_;
  std::size_t max_bytes_;
  std::mutex mutex_;  // guards the fields below: workers append and pods read on many threads
  std::deque<Entry> entries_;  // oldest first
  std::unordered_set<std::string> ids_;
  std::unordered_map<std::string, std::size_t> per_session_;  // entries of each session, to skip a scan
  std::size_t bytes_ = 0;
};

}  // namespace chat::bus
