#include "runtime/backends.hpp"

#include "bus/bus_work_queue.hpp"
#include "bus/jetstream_chunk_log.hpp"
#include "bus/jetstream_work_queue.hpp"
#include "bus/memory_bus.hpp"
#include "bus/memory_chunk_log.hpp"
#include "bus/nats_bus.hpp"
#include "registry/memory_registry.hpp"
#include "limits/memory_limiter.hpp"
#include "limits/redis_limiter.hpp"
#include "registry/redis_registry.hpp"
#include "store/postgres_store.hpp"
#include "store/sqlite_store.hpp"

namespace chat::runtime {

namespace {

bus::JetStreamOptions jetstream_options(const config::Config& c) {
  bus::JetStreamOptions o;
  o.replicas = c.jetstream.replicas;
  o.work_max_age = c.jetstream.work_max_age;
  o.log_max_age = c.jetstream.log_max_age;
  o.log_max_bytes = c.jetstream.log_max_bytes;
  o.ack_wait = c.jetstream.ack_wait;
  o.max_deliver = c.jetstream.max_deliver;
  // Each worker pulls only what its free slots leave room for (twice its
  // slots at most), so the consumer's cap is no throttle. One derived from a
  // worker's own slots kept a backlog from reaching more than five workers,
  // and workers with other settings overwrote it: it is set past any fleet.
  o.max_ack_pending = c.jetstream.max_ack_pending ? c.jetstream.max_ack_pending : 1'000'000;
  return o;
}

}  // namespace

Messaging make_messaging(const config::Config& c, boost::asio::io_context& ioc, const std::string& client_name,
                         bool worker) {
  Messaging m;
  if (!c.nats.url) {
    // One process: the in-process bus, and a log the in-process worker fills.
    m.bus = std::make_unique<bus::MemoryBus>(ioc.get_executor());
    m.work = std::make_unique<bus::BusWorkQueue>(*m.bus);
    m.log = std::make_unique<bus::MemoryChunkLog>(ioc.get_executor(), c.sse.replay_window, c.sse.replay_max_bytes);
    return m;
  }
  auto nats = std::make_unique<bus::NatsBus>(c.nats, client_name);
  if (c.nats.use_jetstream()) {
    m.jetstream = std::make_unique<bus::JetStream>(*nats, jetstream_options(c), worker);
    m.work = std::make_unique<bus::JetStreamWorkQueue>(*m.jetstream);
    m.log = std::make_unique<bus::JetStreamChunkLog>(*m.jetstream);
  } else {
    m.work = std::make_unique<bus::BusWorkQueue>(*nats);
  }
  m.bus = std::move(nats);
  return m;
}

std::unique_ptr<registry::SessionRegistry> make_registry(const config::Config& c, boost::asio::io_context& ioc) {
  if (c.redis.host) {
    registry::check_redis_login({*c.redis.host, c.redis.port, c.redis.password, c.redis.db, c.redis.username});
    return std::make_unique<registry::RedisRegistry>(c.redis);
  }
  return std::make_unique<registry::MemoryRegistry>(ioc.get_executor());
}

std::unique_ptr<store::MessageStore> make_store(const config::Config& c) {
  if (c.store.host) return std::make_unique<store::PostgresStore>(c.store);
  return std::make_unique<store::SqliteStore>(c.store);
}

Limits make_limits(const config::Config& c, std::chrono::milliseconds running_ttl) {
  std::string error;
  auto proxies = limits::TrustedProxies::parse(c.limits.trusted_proxies, error);
  if (!proxies) throw config::ConfigError("SERVER_TRUSTED_PROXIES: " + error);
  Limits out;
  if (c.redis.host)
    out.limiter = std::make_unique<limits::RedisLimiter>(
        registry::RedisEndpoint{*c.redis.host, c.redis.port, c.redis.password, c.redis.db, c.redis.username},
        limits::RedisLimiter::Timing{});
  else
    out.limiter = std::make_unique<limits::MemoryLimiter>();
  const auto& l = c.limits;
  limits::Policy policy{{l.ip_per_minute, std::max<std::uint32_t>(10, l.ip_per_minute / 6)},
                        {l.chat_per_minute, l.chat_burst},
                        l.running_replies,
                        l.streams_per_user,
                        running_ttl,
                        3 * c.redis.renew_interval};
  out.admission = std::make_unique<limits::Admission>(*out.limiter, policy, std::move(*proxies));
  return out;
}

}  // namespace chat::runtime
