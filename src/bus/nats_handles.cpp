#include "bus/nats_handles.hpp"

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <string>

namespace chat::bus {
namespace {

class NatsCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "nats"; }
  std::string message(int value) const override { return natsStatus_GetText(static_cast<natsStatus>(value)); }
};

}  // namespace

const boost::system::error_category& nats_category() noexcept {
  static const NatsCategory category;
  return category;
}

boost::system::error_code to_error_code(natsStatus status) noexcept {
  switch (status) {
    case NATS_OK:
      return {};
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
    // Only returned by a publish made while reconnecting (the reconnect
    // buffer is kept tiny on purpose, see NatsBus).
    case NATS_INSUFFICIENT_BUFFER:
      return boost::asio::error::not_connected;
    case NATS_TIMEOUT:
      return boost::asio::error::timed_out;
    default:
      return {static_cast<int>(status), nats_category()};
  }
}

void throw_if_failed(natsStatus status, const char* what) {
  if (status == NATS_OK) return;
  std::string detail = what;
  if (const char* last = nats_GetLastError(nullptr); last != nullptr && *last != '\0') {
    detail += ": ";
    detail += last;
  }
  throw boost::system::system_error({static_cast<int>(status), nats_category()}, detail);
}

}  // namespace chat::bus
