#pragma once
// Owners for nats.c handles, and the one place where a natsStatus becomes an
// error_code. Everything else in the bus speaks error_code.

#include <nats/nats.h>

#include <boost/system/error_code.hpp>

#include <memory>

namespace chat::bus {

template <class T, void (*Destroy)(T*)>
struct NatsDeleter {
  void operator()(T* p) const noexcept { Destroy(p); }
};

using NatsOptionsPtr = std::unique_ptr<natsOptions, NatsDeleter<natsOptions, natsOptions_Destroy>>;
using NatsConnectionPtr = std::unique_ptr<natsConnection, NatsDeleter<natsConnection, natsConnection_Destroy>>;
using NatsSubscriptionPtr = std::unique_ptr<natsSubscription, NatsDeleter<natsSubscription, natsSubscription_Destroy>>;
using NatsMsgPtr = std::unique_ptr<natsMsg, NatsDeleter<natsMsg, natsMsg_Destroy>>;

// Error codes whose value is a natsStatus; message() is nats.c's text.
const boost::system::error_category& nats_category() noexcept;

// NATS_OK is success. Statuses that mean "no server right now" become
// boost::asio::error::not_connected and NATS_TIMEOUT becomes
// boost::asio::error::timed_out, because those are what callers test for
// (the HTTP layer answers 503 on not_connected) whatever the implementation.
// Everything else keeps its natsStatus in nats_category().
boost::system::error_code to_error_code(natsStatus status) noexcept;

// For set-up calls, where failing is a start-up error: throws
// boost::system::system_error naming `what` and nats.c's last error text.
void throw_if_failed(natsStatus status, const char* what);

}  // namespace chat::bus
