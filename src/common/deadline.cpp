#include "common/deadline.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <memory>

namespace asio = boost::asio;

namespace chat {

void with_deadline(asio::any_io_executor executor, std::chrono::steady_clock::time_point deadline,
                   std::function<void(std::function<void()> done)> step, std::function<void(bool completed)> next) {
  // Strand-only state: the timer and the decision.
  struct State {
    explicit State(asio::any_io_executor ex) : strand(asio::make_strand(ex)), timer(strand) {}
    asio::strand<asio::any_io_executor> strand;
    asio::steady_timer timer;
    bool settled = false;
    std::function<void(bool)> next;
    // Whichever comes first, the step or the deadline, decides.
    void settle(bool completed) {
      if (std::exchange(settled, true)) return;
      timer.cancel();
      next(completed);
    }
  };
  auto state = std::make_shared<State>(executor);
  state->next = std::move(next);
  state->timer.expires_at(deadline);
  state->timer.async_wait([state](boost::system::error_code ec) {
    if (!ec) state->settle(false);
  });
  step([state] { asio::post(state->strand, [state] { state->settle(true); }); });
}

}  // namespace chat
