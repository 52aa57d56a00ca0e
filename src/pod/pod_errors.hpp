#pragma once
// Why the pod refused a request. Store errors (store::Errc) pass through as they
// are; the HTTP layer maps both to statuses.

#include <boost/system/error_code.hpp>

namespace chat::pod {

enum class Errc {
  draining = 1,     // shutting down: try another pod
  bus_unavailable,  // the message bus cannot take the request now
  no_running_reply, // cancel: no worker runs a reply with this id
  not_owner,        // cancel: the reply belongs to another user
  too_many_replies, // the user has RATE_LIMIT_RUNNING_REPLIES replies running
  memory_full,      // the replies in flight fill BUFFER_MAX_BYTES
};

const boost::system::error_category& pod_category() noexcept;
inline boost::system::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), pod_category()}; }

}  // namespace chat::pod

template <>
struct boost::system::is_error_code_enum<chat::pod::Errc> : std::true_type {};
