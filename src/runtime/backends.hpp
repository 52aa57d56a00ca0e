#pragma once
// Picks each infrastructure backend from the configuration, each on its own:
// NATS_URL set selects NATS, REDIS_HOST set selects Redis, DB_HOST set selects
// PostgreSQL; unset selects the embedded counterpart.

#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>

#include "bus/chunk_log.hpp"
#include "bus/jetstream.hpp"
#include "bus/message_bus.hpp"
#include "bus/work_queue.hpp"
#include "config/config.hpp"
#include "limits/admission.hpp"
#include "registry/session_registry.hpp"
#include "store/message_store.hpp"

namespace chat::runtime {

// The bus and what is built on it. Members are declared in the order they
// must be built (and are destroyed in reverse).
struct Messaging {
  std::unique_ptr<bus::MessageBus> bus;
  std::unique_ptr<bus::JetStream> jetstream;  // set when JetStream is on
  std::unique_ptr<bus::WorkQueue> work;
  std::unique_ptr<bus::ChunkLog> log;  // null on core NATS: no shared log
};

// `client_name` names this process to the NATS server; `worker` also sets up
// the workers' consumer.
Messaging make_messaging(const config::Config& c, boost::asio::io_context& ioc, const std::string& client_name,
                         bool worker);
std::unique_ptr<registry::SessionRegistry> make_registry(const config::Config& c, boost::asio::io_context& ioc);
std::unique_ptr<store::MessageStore> make_store(const config::Config& c);

// The limiter (Redis when REDIS_HOST is set, so limits hold across pods) and
// the admission policy from the RATE_LIMIT_* and SERVER_* settings. Throws
// ConfigError for a SERVER_TRUSTED_PROXIES entry that does not parse.
struct Limits {
  std::unique_ptr<limits::Limiter> limiter;
  std::unique_ptr<limits::Admission> admission;
};
Limits make_limits(const config::Config& c, std::chrono::milliseconds running_ttl);

}  // namespace chat::runtime
