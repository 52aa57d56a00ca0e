// chat-worker: takes workflow requests from NATS and streams AI replies back
// to the pods of each session; its composition root. Configured by environment
// variables (flags override them); see --help.

#include <boost/asio/io_context.hpp>

#include <boost/json.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <stdexcept>

#include "common/deadline.hpp"
#include "http/listener.hpp"
#include "metrics/process.hpp"
#include "runtime/probe_api.hpp"
#include "log/log.hpp"
#include "runtime/backends.hpp"
#include "runtime/program.hpp"
#include "runtime/serve.hpp"
#include "runtime/tracing.hpp"
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
  auto tracing = runtime::make_tracing(config.trace, "chat-worker", config.server.pod_id);
  auto worker_config = config.worker;
  worker_config.progress_interval = std::max(config.jetstream.ack_wait / 3, config::Duration{100});
  worker::WorkflowWorker worker(ioc.get_executor(), *messaging.bus, *messaging.work, messaging.log.get(), *registry,
                                worker_config, providers::make_providers(ioc.get_executor(), config), tracing.tracer);

  // Probes and metrics on WORKER_HTTP_PORT.
  std::atomic<bool> draining{false};
  metrics::Registry metrics;
  metrics.add([&](metrics::Exposition& out) {
    metrics::collect_process(out);
    worker.collect(out);
    tracing.collect(out);
    for (auto [name, s] : {std::pair{"bus", messaging.bus->status()}, std::pair{"work_queue", messaging.work->status()},
                           std::pair{"registry", registry->status()}})
      out.gauge("chat_dependency_up", "1 while the dependency is reachable (embedded ones always are).",
                s.connected ? 1 : 0, {{"dependency", name}, {"backend", std::string(s.backend)}});
    out.gauge("chat_draining", "1 after SIGTERM, while the worker drains.", draining ? 1 : 0);
  });
  auto ready = [&] { return !draining && messaging.bus->connected() && messaging.work->status().connected; };
  runtime::ProbeApi probes(
      runtime::ProbeAnswers{[&] {
                              // Without Redis the worker still serves (chunks go to the
                              // broadcast subject): degraded, as a pod says, yet ready.
                              const bool all_up = ready() && registry->connected();
                              boost::json::object o{{"status", draining ? "draining" : all_up ? "healthy" : "degraded"},
                                                    {"bus_connected", messaging.bus->connected()},
                                                    {"work_queue_ready", messaging.work->status().connected},
                                                    {"registry_connected", registry->connected()},
                                                    {"slots_in_use", worker.active()}};
                              return std::pair{!draining.load(), boost::json::serialize(o)};
                            },
                            ready},
      metrics);
  // Bound before any work is taken: a worker that cannot serve its probes
  // exits holding no request (one taken would wait out JS_ACK_WAIT).
  std::shared_ptr<http::Listener> probe_listener;
  if (config.worker.http_port != 0) {
    try {
      probe_listener = std::make_shared<http::Listener>(
          ioc, asio::ip::tcp::endpoint(asio::ip::address_v4::any(), config.worker.http_port), probes,
          http::SessionLimits{}, [] { return false; });
    } catch (const boost::system::system_error& e) {
      throw std::runtime_error("WORKER_HTTP_PORT: cannot listen on port " + std::to_string(config.worker.http_port) +
                               ": " + e.code().message());
    }
    probe_listener->run();
  }
  worker.start();
  log::info("worker_started", {{"threads", threads}, {"registry", registry->status().backend},
                               {"work_queue", messaging.work->status().backend},
                               {"default_provider", config.worker.default_provider}});

  // Shutdown: take no new requests; the running ones finish (bounded).
  runtime::serve_until_signal(ioc, threads, [&](std::function<void()> drained) {
    draining = true;
    log::info("worker_draining", {{"active_generations", worker.active()}});
    with_deadline(
        ioc.get_executor(), std::chrono::steady_clock::now() + config.server.shutdown_timeout,
        [&](std::function<void()> idle) { worker.stop_intake(std::move(idle)); },
        [&worker, &probe_listener, &ioc, redelivered = messaging.log != nullptr,
         drained = std::move(drained)](bool idle) mutable {
          if (probe_listener) probe_listener->stop();
          if (idle) return drained();
          log::warn("shutdown_timeout", {{"active_generations", worker.active()}});
          // JetStream delivers an unfinished request again to another worker,
          // unless this was its last delivery. Core NATS never does. The
          // replies no other worker will take end here, cancelled, or their
          // clients would wait for the pods' reply timeout.
          const auto ending = redelivered ? worker::WorkflowWorker::Ending::last_deliveries
                                          : worker::WorkflowWorker::Ending::all;
          with_deadline(
              ioc.get_executor(), std::chrono::steady_clock::now() + std::chrono::seconds{2},
              [&worker, ending](std::function<void()> stopped) { worker.cancel_running(std::move(stopped), ending); },
              [drained = std::move(drained)](bool) { drained(); });
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
