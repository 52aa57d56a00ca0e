#pragma once
// Joins parallel completions: make_countdown(n, done) returns a callable that
// each of n parts calls once; `done` runs once, on the thread of the last one
// (at once when n is 0). Copies share one count, so it can go into many
// callbacks on many threads.

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>

namespace chat {

inline std::function<void()> make_countdown(std::size_t parts, std::function<void()> done) {
  if (parts == 0) {
    done();
    return [] {};
  }
  struct State {
    std::atomic<std::size_t> left;
    std::function<void()> done;
  };
  auto state = std::make_shared<State>(parts, std::move(done));
  return [state] {
    if (state->left.fetch_sub(1, std::memory_order_acq_rel) == 1) state->done();
  };
}

}  // namespace chat
