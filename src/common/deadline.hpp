#pragma once
// Bounded waiting without polling: run an asynchronous step and go on when it
// reports done or when its deadline passes, whichever comes first.

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <functional>

namespace chat {

// Calls `step` with a completion (callable from any thread, at most once
// counted); `next(completed)` runs exactly once on `executor`: with true when
// the step completed in time, false at the deadline.
void with_deadline(boost::asio::any_io_executor executor, std::chrono::steady_clock::time_point deadline,
                   std::function<void(std::function<void()> done)> step, std::function<void(bool completed)> next);

}  // namespace chat
