#include "chat/app.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <thread>

#include "bus/memory_bus.hpp"
#include "chat/chat_api.hpp"
#include "chat/pod.hpp"
#include "http/listener.hpp"
#include "log/log.hpp"
#include "providers/provider_factory.hpp"
#include "registry/memory_registry.hpp"
#include "sse/events.hpp"
#include "store/sqlite_store.hpp"
#include "worker/workflow_worker.hpp"
#ifdef HAVE_CHAT_BUS_NATS
#include "bus/nats_bus.hpp"
#endif
#ifdef HAVE_CHAT_REGISTRY_REDIS
#include "registry/redis_registry.hpp"
#endif
#ifdef HAVE_CHAT_STORE_POSTGRES
#include "store/postgres_store.hpp"
#endif

namespace asio = boost::asio;

namespace chat {
namespace {

std::unique_ptr<bus::MessageBus> make_bus(const config::Config& c, asio::io_context& ioc) {
  if (c.nats.url) {
#ifdef HAVE_CHAT_BUS_NATS
    return std::make_unique<bus::NatsBus>(c.nats, "chatd-" + c.server.pod_id);
#else
    throw config::ConfigError("NATS_URL is set but this build has no NATS support");
#endif
  }
  return std::make_unique<bus::MemoryBus>(ioc.get_executor());
}

std::unique_ptr<registry::SessionRegistry> make_registry(const config::Config& c, asio::io_context& ioc) {
  if (c.redis.host) {
#ifdef HAVE_CHAT_REGISTRY_REDIS
    return std::make_unique<registry::RedisRegistry>(c.redis);
#else
    throw config::ConfigError("REDIS_HOST is set but this build has no Redis support");
#endif
  }
  return std::make_unique<registry::MemoryRegistry>(ioc.get_executor());
}

std::unique_ptr<store::MessageStore> make_store(const config::Config& c) {
  if (c.store.host) {
#ifdef HAVE_CHAT_STORE_POSTGRES
    return std::make_unique<store::PostgresStore>(c.store);
#else
    throw config::ConfigError("DB_HOST is set but this build has no PostgreSQL support");
#endif
  }
  return std::make_unique<store::SqliteStore>(c.store);
}

HubOptions hub_options(const config::Config& c, unsigned threads) {
  HubOptions o;
  o.shards = std::max(4u, threads * 2);
  o.buffer = buffer::Limits{c.buffer.max_buffers, c.buffer.max_chunks, c.buffer.max_age, c.buffer.missing_chunk_timeout};
  o.cleanup_interval = c.buffer.cleanup_interval;
  o.heartbeat_interval = c.sse.heartbeat_interval;
  o.late_join_window = c.sse.late_join_window;
  o.replay_window = c.sse.replay_window;
  o.replay_max_bytes = c.sse.replay_max_bytes / o.shards;
  return o;
}

// Polls `done` every 50 ms until it holds or `deadline` passes, then runs `next`.
void wait_until(asio::steady_timer& timer, std::function<bool()> done, std::chrono::steady_clock::time_point deadline,
                std::function<void(bool)> next) {
  if (done() || std::chrono::steady_clock::now() >= deadline) return next(done());
  timer.expires_after(std::chrono::milliseconds{50});
  timer.async_wait([&timer, done = std::move(done), deadline, next = std::move(next)](boost::system::error_code) mutable {
    wait_until(timer, std::move(done), deadline, std::move(next));
  });
}

}  // namespace

int run_pod(const config::Config& config) {
  unsigned threads = config.server.threads ? config.server.threads : std::max(1u, std::thread::hardware_concurrency());
  asio::io_context ioc{static_cast<int>(threads)};

  auto bus = make_bus(config, ioc);
  auto registry = make_registry(config, ioc);
  auto store = make_store(config);
  Pod pod(ioc, config.server.pod_id, hub_options(config, threads), *bus, *registry, *store);
  ChatApi api(config, pod, *bus, *registry, *store);

  // The embedded default runs its own worker on the in-process bus.
  std::unique_ptr<worker::WorkflowWorker> worker;
  if (bus->kind() == "memory") {
    worker = std::make_unique<worker::WorkflowWorker>(ioc.get_executor(), *bus, *registry, config.worker,
                                                      providers::make_providers(ioc.get_executor(), config));
    worker->start();
  }
  pod.start([&api] { return api.health_json(); });

  http::SessionLimits limits{config.server.max_body_bytes, 16 * 1024, config.server.read_timeout, config.server.write_timeout};
  auto endpoint = asio::ip::tcp::endpoint(asio::ip::make_address(config.server.host), config.server.port);
  auto listener = std::make_shared<http::Listener>(ioc, endpoint, api, limits, [&pod, &config] {
    return http::HttpSession::open_sessions() + pod.hub().stats().connections >= config.server.max_connections;
  });
  listener->run();
  log::info("chatd_started", {{"pod_id", pod.id()}, {"host", config.server.host}, {"port", listener->port()},
                              {"threads", threads}, {"bus", bus->kind()}, {"registry", registry->kind()},
                              {"store", store->kind()}});

  // Shutdown: stop accepting, let running replies finish and be stored, then
  // close every stream with a retry hint and leave.
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  asio::steady_timer shutdown_timer(ioc);
  bool shutting_down = false;
  std::function<void()> await_signal = [&] {
    signals.async_wait([&](boost::system::error_code ec, int signo) {
      if (ec) return;
      if (shutting_down) {
        log::warn("shutdown_forced", {{"signal", signo}});
        return ioc.stop();
      }
      shutting_down = true;
      await_signal();
      log::info("shutdown_started", {{"signal", signo}});
      api.start_draining();
      listener->stop();
      if (worker) worker->stop_intake();
      auto deadline = std::chrono::steady_clock::now() + config.server.shutdown_timeout;
      wait_until(
          shutdown_timer, [&] { return (!worker || worker->active() == 0) && pod.hub().stats().streaming_buffers == 0; }, deadline,
          [&, deadline](bool drained) {
            if (!drained) log::warn("shutdown_timeout", {{"active_buffers", pod.hub().stats().buffers}});
            pod.stop_intake();
            // The registry and the store may be down: each gets the rest of
            // the shutdown time, not forever.
            auto unregistered = std::make_shared<std::atomic<bool>>(false);
            auto flushed = std::make_shared<std::atomic<bool>>(false);
            registry->remove_pod(pod.id(), [unregistered](boost::system::error_code) { unregistered->store(true); });
            store->flush([flushed](boost::system::error_code) { flushed->store(true); });
            wait_until(
                shutdown_timer, [unregistered, flushed] { return unregistered->load() && flushed->load(); },
                std::max(deadline, std::chrono::steady_clock::now() + std::chrono::seconds{2}), [&](bool done) {
                  if (!done)
                    log::warn("shutdown_incomplete", {{"pending_writes", pod.stats().writes_pending.load()},
                                                      {"registry", registry->connected()}});
                  pod.hub().close_all(sse::retry_frame(config.sse.retry));
                  // Give the last frames a moment to reach the clients.
                  wait_until(
                      shutdown_timer, [&] { return pod.hub().stats().connections == 0; },
                      std::chrono::steady_clock::now() + std::chrono::seconds{2}, [&](bool) { ioc.stop(); });
                });
          });
    });
  };
  await_signal();

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  log::info("chatd_stopped", {{"pod_id", pod.id()}, {"messages_stored", pod.stats().messages_stored.load()}});
  return 0;
}

}  // namespace chat
