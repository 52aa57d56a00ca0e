#pragma once
// The client side of a provider test: an io_context run by a few threads (as
// chat-worker runs it), plus request builders.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <time.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "http_client/client.hpp"
#include "protocol/messages.hpp"

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

inline protocol::WorkflowRequest chat_request(std::string message = "Hello there") {
  protocol::WorkflowRequest r;
  r.message_id = "m-1";
  r.session_id = "s-1";
  r.user_id = "u-1";
  r.message = std::move(message);
  r.correlation_id = "c-1";
  return r;
}

}  // namespace chat::http_client::test
