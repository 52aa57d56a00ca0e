#include "pod/chats_in_flight.hpp"

#include <utility>

namespace chat::pod {

bool ChatsInFlight::enter() {
  std::lock_guard lock(mutex_);
  if (closed_) return false;
  ++in_flight_;
  return true;
}

void ChatsInFlight::leave() {
  std::function<void()> when_none;
  {
    std::lock_guard lock(mutex_);
    if (--in_flight_ == 0) when_none = std::exchange(when_none_, {});
  }
  if (when_none) when_none();
}

void ChatsInFlight::close(std::function<void()> when_none) {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    if (in_flight_ > 0) {
      when_none_ = std::move(when_none);
      return;
    }
  }
  when_none();
}

void ChatsInFlight::give_up() {
  std::lock_guard lock(mutex_);
  given_up_ = true;
}

bool ChatsInFlight::given_up() const {
  std::lock_guard lock(mutex_);
  return given_up_;
}

}  // namespace chat::pod
