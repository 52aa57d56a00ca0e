// chat-worker: takes workflow requests from NATS and streams AI replies back
// to the pods of each session; its composition root. Configured by environment
// variables (flags override them); see --help.

#include <boost/asio/io_context.hpp>

#include "common/deadline.hpp"
#include "log/log.hpp"
#include "runtime/backends.hpp"
#include "runtime/program.hpp"
#include "runtime/serve.hpp"
#include "providers/provider_factory.hpp"
#include "worker/workflow_worker.hpp"

namespace asio = boost::asio;

namespace chat {
namespace {

int run_worker(const config::Config& config) {
  if (!config.nats.url)
    throw config::ConfigError(
        "NATS_URL is required: chat-worker takes its work from NATS (chatd runs its own worker when no NATS is configured)");
  unsigned threads = runtime::thread_count(config.worker.threads);
  asio::io_context ioc{static_cast<int>(threads)};

  auto messaging = runtime::make_messaging(config, ioc, "chat-worker", true);
  if (!config.redis.host)
    log::warn("no_registry", {{"detail", "REDIS_HOST is not set: every chunk goes to the broadcast subject"}});
  auto registry = runtime::make_registry(config, ioc);
  auto worker_config = config.worker;
  worker_config.progress_interval = std::max(config.jetstream.ack_wait / 3, config::Duration{100});
  worker::WorkflowWorker worker(ioc.get_executor(), *messaging.bus, *messaging.work, messaging.log.get(), *registry,
                                worker_config, providers::make_providers(ioc.get_executor(), config));
  worker.start();
  log::info("worker_started", {{"threads", threads}, {"registry", registry->status().backend},
                               {"work_queue", messaging.work->status().backend},
                               {"default_provider", config.worker.default_provider}});

  // Shutdown: take no new requests; the running ones finish (bounded).
  runtime::serve_until_signal(ioc, threads, [&](std::function<void()> drained) {
    log::info("worker_draining", {{"active_generations", worker.active()}});
    with_deadline(
        ioc.get_executor(), std::chrono::steady_clock::now() + config.server.shutdown_timeout,
        [&](std::function<void()> idle) { worker.stop_intake(std::move(idle)); },
        [&worker, drained = std::move(drained)](bool idle) {
          if (!idle) log::warn("shutdown_timeout", {{"active_generations", worker.active()}});
          drained();
        });
  });
  log::info("worker_stopped", {{"completed", worker.completed()}});
  return 0;
}

}  // namespace
}  // namespace chat

int main(int argc, char** argv) {
  return chat::runtime::program_main(chat::config::Program::worker, "chat-worker", argc, argv, chat::run_worker);
}
