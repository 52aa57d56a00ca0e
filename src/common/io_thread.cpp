#include "common/io_thread.hpp"

#include "log/log.hpp"

namespace chat {

std::thread start_io_thread(boost::asio::io_context& io, std::string what) {
  return std::thread([&io, what = std::move(what)] {
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        log::error("handler_threw", {{"thread", what}, {"error", e.what()}});
      }
    }
  });
}

}  // namespace chat
