#include "runtime/backends.hpp"

#include "bus/memory_bus.hpp"
#include "bus/nats_bus.hpp"
#include "registry/memory_registry.hpp"
#include "registry/redis_registry.hpp"
#include "store/postgres_store.hpp"
#include "store/sqlite_store.hpp"

namespace chat::runtime {

std::unique_ptr<bus::MessageBus> make_bus(const config::Config& c, boost::asio::io_context& ioc,
                                          const std::string& client_name) {
  if (c.nats.url) return std::make_unique<bus::NatsBus>(c.nats, client_name);
  return std::make_unique<bus::MemoryBus>(ioc.get_executor());
}

std::unique_ptr<registry::SessionRegistry> make_registry(const config::Config& c, boost::asio::io_context& ioc) {
  if (c.redis.host) return std::make_unique<registry::RedisRegistry>(c.redis);
  return std::make_unique<registry::MemoryRegistry>(ioc.get_executor());
}

std::unique_ptr<store::MessageStore> make_store(const config::Config& c) {
  if (c.store.host) return std::make_unique<store::PostgresStore>(c.store);
  return std::make_unique<store::SqliteStore>(c.store);
}

}  // namespace chat::runtime
