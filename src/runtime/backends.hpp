#pragma once
// Picks each infrastructure backend from the configuration, each on its own:
// NATS_URL set selects NATS, REDIS_HOST set selects Redis, DB_HOST set selects
// PostgreSQL; unset selects the embedded counterpart.

#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>

#include "bus/message_bus.hpp"
#include "config/config.hpp"
#include "registry/session_registry.hpp"
#include "store/message_store.hpp"

namespace chat::runtime {

// `client_name` names this process to the NATS server.
std::unique_ptr<bus::MessageBus> make_bus(const config::Config& c, boost::asio::io_context& ioc,
                                          const std::string& client_name);
std::unique_ptr<registry::SessionRegistry> make_registry(const config::Config& c, boost::asio::io_context& ioc);
std::unique_ptr<store::MessageStore> make_store(const config::Config& c);

}  // namespace chat::runtime
