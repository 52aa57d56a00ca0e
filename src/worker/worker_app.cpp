#include "worker/worker_app.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <thread>

#include "log/log.hpp"
#include "providers/provider_factory.hpp"
#include "registry/memory_registry.hpp"
#include "worker/workflow_worker.hpp"
#ifdef HAVE_CHAT_BUS_NATS
#include "bus/nats_bus.hpp"
#endif
#ifdef HAVE_CHAT_REGISTRY_REDIS
#include "registry/redis_registry.hpp"
#endif

namespace asio = boost::asio;

namespace chat::worker {

int run_worker(const config::Config& config) {
  if (!config.nats.url)
    throw config::ConfigError("NATS_URL is required: chat-worker takes its work from NATS (chatd runs its own worker when no NATS is configured)");
#ifndef HAVE_CHAT_BUS_NATS
  throw config::ConfigError("this build has no NATS support");
#else
  unsigned threads = config.worker.threads ? config.worker.threads : std::max(1u, std::thread::hardware_concurrency());
  asio::io_context ioc{static_cast<int>(threads)};
  auto work = asio::make_work_guard(ioc);

  bus::NatsBus bus(config.nats, "chat-worker");
  std::unique_ptr<registry::SessionRegistry> registry;
  if (config.redis.host) {
#ifdef HAVE_CHAT_REGISTRY_REDIS
    registry = std::make_unique<registry::RedisRegistry>(config.redis);
#else
    throw config::ConfigError("REDIS_HOST is set but this build has no Redis support");
#endif
  } else {
    log::warn("no_registry", {{"detail", "REDIS_HOST is not set: every chunk goes to the broadcast subject"}});
    registry = std::make_unique<registry::MemoryRegistry>(ioc.get_executor());
  }

  WorkflowWorker worker(ioc.get_executor(), bus, *registry, config.worker,
                        providers::make_providers(ioc.get_executor(), config));
  worker.start();
  log::info("worker_started", {{"threads", threads}, {"nats_url_set", true}, {"registry", registry->kind()},
                               {"default_provider", config.worker.default_provider}});

  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  asio::steady_timer poll(ioc);
  std::chrono::steady_clock::time_point deadline{};
  std::function<void()> wait_idle = [&] {
    if (worker.active() == 0 || std::chrono::steady_clock::now() >= deadline) {
      if (worker.active() != 0) log::warn("shutdown_timeout", {{"active_generations", worker.active()}});
      work.reset();
      return ioc.stop();
    }
    poll.expires_after(std::chrono::milliseconds{50});
    poll.async_wait([&](boost::system::error_code) { wait_idle(); });
  };
  signals.async_wait([&](boost::system::error_code ec, int signo) {
    if (ec) return;
    log::info("shutdown_started", {{"signal", signo}, {"active_generations", worker.active()}});
    worker.stop_intake();
    deadline = std::chrono::steady_clock::now() + config.server.shutdown_timeout;
    signals.async_wait([&](boost::system::error_code e, int) {
      if (!e) ioc.stop();  // a second signal: leave now
    });
    wait_idle();
  });

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  log::info("worker_stopped", {{"completed", worker.completed()}});
  return 0;
#endif
}

}  // namespace chat::worker
