#pragma once
// Runs a program's io_context until SIGINT or SIGTERM, then drains: `drain`
// gets a completion to call when the program has finished its work, and the
// context stops then. A second signal stops it at once.

#include <boost/asio/io_context.hpp>

#include <functional>

namespace chat::runtime {

using Drain = std::function<void(std::function<void()> drained)>;

// Returns when the io_context has stopped and its threads have joined.
void serve_until_signal(boost::asio::io_context& ioc, unsigned threads, Drain drain);

// SERVER_THREADS/WORKER_THREADS: 0 means one per core.
unsigned thread_count(unsigned configured);

}  // namespace chat::runtime
