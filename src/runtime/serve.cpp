#include "runtime/serve.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <algorithm>
#include <thread>
#include <vector>

#include "log/log.hpp"

namespace asio = boost::asio;

namespace chat::runtime {

unsigned thread_count(unsigned configured) {
  return configured ? configured : std::max(1u, std::thread::hardware_concurrency());
}

void serve_until_signal(asio::io_context& ioc, unsigned threads, Drain drain) {
  // Keeps run() going while nothing else is queued (a worker waiting on NATS).
  auto work = asio::make_work_guard(ioc);
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int signo) {
    if (ec) return;
    log::info("shutdown_started", {{"signal", signo}});
    signals.async_wait([&](boost::system::error_code again, int second) {
      if (again) return;
      log::warn("shutdown_forced", {{"signal", second}});
      ioc.stop();
    });
    drain([&] {
      asio::post(ioc, [&] {
        signals.cancel();
        work.reset();
        ioc.stop();
      });
    });
  });
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
}

}  // namespace chat::runtime
