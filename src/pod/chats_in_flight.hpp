#pragma once
// The chats a pod let in and has not answered yet. A drain refuses new ones at
// once but must wait for these: one still at the store when the drain began
// would otherwise be answered 200 after the pod stopped listening for its reply.

#include <cstddef>
#include <functional>
#include <mutex>

namespace chat::pod {

class ChatsInFlight {
 public:
  // False once closed: the chat is refused.
  bool enter();
  void leave();
  // No chat enters from now on; `when_none` runs once none is in flight (at
  // once, or on the thread of the last to leave).
  void close(std::function<void()> when_none);
  // The drain waits no more: a chat still in flight is refused at its next step.
  void give_up();
  bool given_up() const;

 private:
  // Guards everything below: chats enter on the API's threads, leave on the
  // store's and the bus's, and the drain closes on the pod's.
  mutable std::mutex mutex_;
  bool closed_ = false;
  bool given_up_ = false;
  std::size_t in_flight_ = 0;
  std::function<void()> when_none_;
};

}  // namespace chat::pod
