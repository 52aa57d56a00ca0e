#include "common/callback_gate.hpp"

#include <thread>

namespace chat {

void CallbackGate::close() {
  state_->open.store(false);
  // Answers inside finish what they do: a response handed on, a counter
  // added. Short, so waiting for them is a brief spin at shutdown.
  while (state_->inside.load() > 0) std::this_thread::yield();
}

}  // namespace chat
