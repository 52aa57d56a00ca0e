// chatd: the chat backend pod, and its composition root: each component built
// from the configuration (embedded or distributed, chosen per backend), served
// until SIGTERM/SIGINT, then drained. Configured by environment variables
// (flags override them); see --help.

#include <boost/asio/io_context.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "api/chat_api.hpp"
#include "auth/make_authenticator.hpp"
#include "common/countdown.hpp"
#include "common/deadline.hpp"
#include "http/listener.hpp"
#include "log/log.hpp"
#include "metrics/process.hpp"
#include "pod/pod.hpp"
#include "runtime/backends.hpp"
#include "runtime/program.hpp"
#include "runtime/serve.hpp"
#include "runtime/tracing.hpp"
#include "providers/provider_factory.hpp"
#include "web/static_site.hpp"
#include "web/web_front.hpp"
#include "worker/workflow_worker.hpp"

namespace asio = boost::asio;

namespace chat {
namespace {

pod::PodOptions pod_options(const config::Config& c, unsigned threads) {
  pod::PodOptions o;
  o.pod_id = c.server.pod_id;
  o.hub.shards = std::max(4u, threads * 2);
  o.hub.buffer = buffer::Limits{c.buffer.max_buffers, c.buffer.max_chunks, c.buffer.max_age,
                                c.buffer.missing_chunk_timeout, c.buffer.max_reply_bytes};
  o.hub.cleanup_interval = c.buffer.cleanup_interval;
  o.hub.heartbeat_interval = c.sse.heartbeat_interval;
  o.hub.late_join_window = c.sse.late_join_window;
  o.hub.replay_window = c.sse.replay_window;
  o.hub.replay_max_bytes = c.sse.replay_max_bytes / o.hub.shards;
  o.hub.reply_memory_budget = c.buffer.max_bytes;
  o.stream_limits = sse::QueueLimits{c.sse.max_queue_events, c.sse.max_queue_bytes, c.sse.socket_send_buffer, c.sse.stall_grace};
  o.stream_retry = c.sse.retry;
  o.default_provider = c.worker.default_provider;
  o.history_turns = c.chat.history_turns;
  o.shutdown_timeout = c.server.shutdown_timeout;
  o.hand_off_streams = c.nats.url.has_value();  // other pods share the bus
  o.replies_end_with_pod = !c.nats.url.has_value();  // the in-process bus and worker
  o.hand_off_spread = c.sse.hand_off_spread;
  return o;
}

api::ApiOptions api_options(const config::Config& c) {
  api::ApiOptions o{c.server.cors_origins, {c.chat.max_message_chars}};
  o.default_provider = c.worker.default_provider;
  o.history_max_bytes = c.chat.history_max_bytes;
  o.max_body_bytes = c.server.max_body_bytes;
  for (auto& p : providers::enabled_providers(c)) o.providers.push_back({std::move(p.name), std::move(p.default_model)});
  return o;
}

int run_pod(const config::Config& config) {
  unsigned threads = runtime::thread_count(config.server.threads);
  asio::io_context ioc{static_cast<int>(threads)};

  // First: a key that cannot be used stops the start before anything connects.
  auto authenticator = auth::make_authenticator(config.auth, config.server.host);
  auto messaging = runtime::make_messaging(config, ioc, "chatd-" + config.server.pod_id, false);
  auto& bus = messaging.bus;
  auto registry = runtime::make_registry(config, ioc);
  auto store = runtime::make_store(config);
  auto limits = runtime::make_limits(config, 2 * config.buffer.max_age);
  auto tracing = runtime::make_tracing(config.trace, "chatd", config.server.pod_id);
  auto options_of_pod = pod_options(config, threads);
  options_of_pod.tracer = tracing.tracer;
  pod::Pod pod(ioc, std::move(options_of_pod), *bus, *messaging.work, messaging.log.get(), *registry, *store,
               limits.admission.get());
  metrics::Registry metrics;
  auto options = api_options(config);
  options.authenticator = authenticator.get();
  options.tracer = tracing.tracer;
  api::ChatApi api(std::move(options), pod, *store, &metrics, limits.admission.get());
  // WEB_UI: the chat page in front of the API (web/, src/web).
  web::StaticSite site(config.web.ui ? web::embedded_assets() : std::span<const web::EmbeddedAsset>{});
  web::WebFront front(site, api);
  http::RequestHandler& handler = site.empty() ? static_cast<http::RequestHandler&>(api) : front;

  // The embedded default runs its own worker on the in-process bus.
  std::unique_ptr<worker::WorkflowWorker> worker;
  if (bus->status().embedded) {
    worker = std::make_unique<worker::WorkflowWorker>(ioc.get_executor(), *bus, *messaging.work, messaging.log.get(),
                                                      *registry, config.worker,
                                                      providers::make_providers(ioc.get_executor(), config),
                                                      tracing.tracer);
    worker->start();
  }
  pod.start();
  limits.admission->start(ioc.get_executor());
  metrics.add([&](metrics::Exposition& out) {
    metrics::collect_process(out);
    pod.collect(out);
    api.collect(out);
    limits.admission->metrics().collect(out);
    if (worker) worker->collect(out);
    tracing.collect(out);
  });

  http::SessionLimits session_limits{config.server.max_body_bytes, 16 * 1024, config.server.read_timeout,
                                     config.server.write_timeout};
  auto endpoint = asio::ip::tcp::endpoint(asio::ip::make_address(config.server.host), config.server.port);
  std::shared_ptr<http::Listener> listener;
  try {
    listener = std::make_shared<http::Listener>(ioc, endpoint, handler, session_limits, [&pod, &config] {
      return http::HttpSession::open_sessions() + pod.open_streams() >= config.server.max_connections;
    });
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("SERVER_HOST/SERVER_PORT: cannot listen on " + config.server.host + " port " +
                             std::to_string(config.server.port) + ": " + e.code().message());
  }
  // Connections per client address; a trusted proxy carries many clients and is not capped.
  listener->limit_per_address(std::make_shared<http::AddressConnections>(
      config.limits.connections_per_ip,
      [&proxies = limits.admission->proxies()](const asio::ip::address& a) { return proxies.contains(a); }),
      &limits.admission->metrics().refused[static_cast<std::size_t>(limits::Limit::connections)]);
  listener->let_probes_through({"/health", "/ready", "/metrics"});
  metrics.add([&listener](metrics::Exposition& out) { listener->collect(out); });
  listener->run();
  log::info("chatd_started", {{"pod_id", pod.id()}, {"host", config.server.host}, {"port", listener->port()},
                              {"threads", threads}, {"web_ui", !site.empty()},
                              {"auth_mode", authenticator ? "jwt" : "none"}, {"bus", bus->status().backend},
                              {"registry", registry->status().backend}, {"store", store->status().backend},
                              {"limits", limits.limiter->status().backend}});

  // Shutdown: stop accepting, let running replies finish and be stored, then
  // close every stream with a retry hint and leave.
  runtime::serve_until_signal(ioc, threads, [&](std::function<void()> drained) {
    listener->stop();
    auto arrive = make_countdown(worker ? 2 : 1, std::move(drained));
    pod.drain(arrive);
    if (!worker) return;
    // A little after the pod's own deadline: by then the pod has ended what
    // still runs (stored incomplete), and the generations can go.
    constexpr std::chrono::milliseconds kAfterThePod{250};
    with_deadline(
        ioc.get_executor(), std::chrono::steady_clock::now() + config.server.shutdown_timeout + kAfterThePod,
        [&](std::function<void()> idle) { worker->stop_intake(std::move(idle)); },
        [arrive, &worker, &ioc](bool idle) {
          if (idle) return arrive();
          log::warn("shutdown_timeout", {{"active_generations", worker->active()}});
          with_deadline(
              ioc.get_executor(), std::chrono::steady_clock::now() + std::chrono::seconds{2},
              [&worker](std::function<void()> stopped) { worker->cancel_running(std::move(stopped)); },
              [arrive](bool) { arrive(); });
        });
  });
  // Its thread may be answering a decision: done before the callers go.
  limits.limiter->stop();
  log::info("chatd_stopped", {{"pod_id", pod.id()}, {"replies_stored", pod.stats().replies_stored.value()}});
  return 0;
}

}  // namespace
}  // namespace chat

int main(int argc, char** argv) { return chat::runtime::program_main(chat::config::Program::chatd, "chatd", argc, argv, chat::run_pod); }
