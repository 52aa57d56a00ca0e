#pragma once
// A GenerationSink that records every call, checks the contract (one final
// call, nothing after it) and lets a test wait for the end.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "providers/provider.hpp"

namespace chat::providers::test {

class RecordingSink final : public GenerationSink {
 public:
  void on_text(std::string_view text) override {
    {
      std::lock_guard lock(mutex_);
      if (finals_ > 0) ++calls_after_final_;
      pieces_.emplace_back(text);
    }
    cv_.notify_all();
  }
  void on_finish(const Finish& finish) override {
    {
      std::lock_guard lock(mutex_);
      if (finals_++ > 0) ++calls_after_final_;
      finish_ = finish;
      ended_at_ = std::chrono::steady_clock::now();
    }
    cv_.notify_all();
  }
  void on_error(std::string_view code, std::string_view message) override {
    {
      std::lock_guard lock(mutex_);
      if (finals_++ > 0) ++calls_after_final_;
      error_code_ = code;
      error_message_ = message;
      ended_at_ = std::chrono::steady_clock::now();
    }
    cv_.notify_all();
  }

  bool wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return finals_ > 0; });
  }
  // Until `pieces` on_text calls arrived.
  bool wait_text(std::size_t pieces = 1, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return pieces_.size() >= pieces; });
  }

  std::vector<std::string> pieces() const {
    std::lock_guard lock(mutex_);
    return pieces_;
  }
  std::string text() const {
    std::lock_guard lock(mutex_);
    std::string all;
    for (const auto& p : pieces_) all += p;
    return all;
  }
  std::optional<Finish> finish() const {
    std::lock_guard lock(mutex_);
    return finish_;
  }
  std::optional<std::string> error_code() const {
    std::lock_guard lock(mutex_);
    return error_code_;
  }
  std::string error_message() const {
    std::lock_guard lock(mutex_);
    return error_message_;
  }
  int finals() const {
    std::lock_guard lock(mutex_);
    return finals_;
  }
  int calls_after_final() const {
    std::lock_guard lock(mutex_);
    return calls_after_final_;
  }
  std::optional<std::chrono::steady_clock::time_point> ended_at() const {
    std::lock_guard lock(mutex_);
    return ended_at_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> pieces_;
  std::optional<Finish> finish_;
  std::optional<std::string> error_code_;
  std::string error_message_;
  int finals_ = 0;
  int calls_after_final_ = 0;
  std::optional<std::chrono::steady_clock::time_point> ended_at_;
};

}  // namespace chat::providers::test
