#pragma once
// The client side of an HTTP client or provider test: an io_context run by a
// few threads (as chat-worker runs it), and a way to wait for what they do.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <time.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "http_client/client.hpp"

namespace chat::http_client::test {

class ClientLoop {
 public:
  explicit ClientLoop(unsigned threads = 2) : work_(boost::asio::make_work_guard(ioc_)) { add_threads(threads); }
  ~ClientLoop() { stop(); }

  // ClientLoop(0) runs nothing until threads are added: lets a test queue
  // several things before any of them runs.
  void add_threads(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i)
      threads_.emplace_back([this] {
        ioc_.run();
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        cpu_ns_ += static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
      });
  }

  // Stops the threads; afterwards cpu_time() is the CPU they used in total.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  std::chrono::nanoseconds cpu_time() const { return std::chrono::nanoseconds{cpu_ns_.load()}; }

  boost::asio::any_io_executor executor() { return ioc_.get_executor(); }

  std::shared_ptr<HttpClient> client(HttpClientOptions options = fast_options()) {
    return std::make_shared<HttpClient>(executor(), std::move(options));
  }

  static HttpClientOptions fast_options() {
    HttpClientOptions o;
    o.connect_timeout = std::chrono::seconds(2);
    o.read_timeout = std::chrono::seconds(5);
    return o;
  }

 private:
  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
  std::atomic<std::uint64_t> cpu_ns_{0};
};

// Whether `condition` became true within `timeout`, for what the client does
// on its own threads and announces to no one (a connection going back to the
// pool, a generation letting go of itself). The limit is generous: it only
// matters when the test fails.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace chat::http_client::test
