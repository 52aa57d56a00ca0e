#pragma once
// An event stream that keeps what it is sent: the hub's side of a client,
// without a socket.

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "sse/event_sink.hpp"

namespace chat::hub {

class RecordingSink final : public sse::EventSink {
 public:
  RecordingSink(std::string id, std::string session_id) : id_(std::move(id)), session_id_(std::move(session_id)) {}

  std::string id() const override { return id_; }
  std::string_view session_id() const override { return session_id_; }
  void send(sse::Frame frame) override { keep(std::move(frame)); }
  void send_backlog(const std::vector<sse::Frame>& frames) override {
    for (const auto& f : frames) keep(f);
  }
  void close(sse::Frame last) override {
    std::lock_guard lock(mutex_);
    if (last) frames_.push_back(std::move(last));
    closed_ = true;
  }

  // Each frame's "event: x" name, in order.
  std::vector<std::string> events() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& f : frames_) {
      auto at = f->find("event: ");
      out.push_back(at == std::string::npos ? "" : f->substr(at + 7, f->find('\n', at) - at - 7));
    }
    return out;
  }
  // The "id: " lines of the chunk frames, in order.
  std::vector<std::string> chunk_ids() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& f : frames_)
      if (f->rfind("id: ", 0) == 0) out.push_back(f->substr(4, f->find('\n') - 4));
    return out;
  }
  std::vector<sse::Frame> frames() const {
    std::lock_guard lock(mutex_);
    return frames_;
  }
  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }
  bool has_ended() const override { return ended_.load(); }
  // The client went away (as SseConnection::ended): its detach comes next.
  void end() { ended_ = true; }

 private:
  void keep(sse::Frame f) {
    std::lock_guard lock(mutex_);
    if (!closed_) frames_.push_back(std::move(f));
  }

  std::string id_;
  std::string session_id_;
  mutable std::mutex mutex_;  // the hub's strands and the test thread both read and write
  std::vector<sse::Frame> frames_;
  bool closed_ = false;
  std::atomic<bool> ended_{false};
};

}  // namespace chat::hub
