#pragma once
// Lets answers from other threads (a store's, a bus's, a limiter's) reach an
// object only while it lives. The owner closes the gate first thing in its
// destructor: closing waits for the answers already inside to leave, and every
// later one is dropped. Answers never wait for each other (no lock is held
// while they run), and one may run inside another (a limiter that answers at
// once, inside the call that asked it).

#include <atomic>
#include <memory>
#include <utility>

namespace chat {

class CallbackGate {
 public:
  // `f`, wrapped to run only while the gate is open.
  template <class F>
  auto guard(F f) const {
    return [state = state_, f = std::move(f)](auto&&... args) mutable {
      Inside inside(*state);
      if (inside.open) f(std::forward<decltype(args)>(args)...);
    };
  }
  // From the owner's destructor, on a thread that is not inside an answer.
  void close();

 private:
  struct State {
    std::atomic<bool> open{true};
    std::atomic<int> inside{0};
  };
  // Counted in before the gate is looked at, so close() either sees the count
  // or this sees the gate closed.
  struct Inside {
    explicit Inside(State& s) : state(s) { state.inside.fetch_add(1); open = state.open.load(); }
    ~Inside() { state.inside.fetch_sub(1); }
    State& state;
    bool open = false;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace chat
