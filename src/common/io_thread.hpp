#pragma once
// A thread of a component's own that runs its private io_context (the NATS
// bus thread, the registry thread, the JetStream thread). An exception that
// escapes a handler is logged under `what` and the loop goes on: nothing above
// the handler could handle it, and ending the thread would stall the component.

#include <boost/asio/io_context.hpp>

#include <string>
#include <thread>

namespace chat {

std::thread start_io_thread(boost::asio::io_context& io, std::string what);

}  // namespace chat
