#include "pod/pod_errors.hpp"

#include <string>

namespace chat::pod {
namespace {

class PodCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "chat.pod"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::draining: return "this pod is shutting down";
      case Errc::bus_unavailable: return "the message bus is unreachable";
      case Errc::no_running_reply: return "no running reply with this message_id";
      case Errc::not_owner: return "this reply belongs to another user";
      case Errc::too_many_replies: return "too many replies of this user are running";
      case Errc::memory_full: return "the replies in flight fill this pod's budget (BUFFER_MAX_BYTES or BUFFER_MAX_BUFFERS)";
    }
    return "unknown pod error";
  }
};

}  // namespace

const boost::system::error_category& pod_category() noexcept {
  static const PodCategory category;
  return category;
}

}  // namespace chat::pod
