#pragma once
// Requests waiting for a free generation slot, served one user at a time in
// turn, fewest running replies first: a user's hundredth queued request never
// delays another user's first one by more than a slot's turn. Bounded. Pure
// logic; the worker guards it.

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bus/work_queue.hpp"
#include "protocol/messages.hpp"

namespace chat::worker {

struct WaitingRequest {
  protocol::WorkflowRequest request;
  std::unique_ptr<bus::WorkItem> item;
};

class FairQueue {
 public:
  explicit FairQueue(std::size_t capacity) : capacity_(capacity) {}

  // False when full, and `w` is then left as it was (the caller refuses it).
  bool push(WaitingRequest&& w);
  // The oldest request of the user in turn with the fewest replies `running`.
  std::optional<WaitingRequest> pop(const std::function<std::size_t(const std::string& user)>& running);
  const protocol::WorkflowRequest* find(const std::string& message_id) const;
  // A request cancelled before it started.
  std::optional<WaitingRequest> remove(const std::string& message_id);
  // The queue delivered a waiting request again: the newer delivery replaces
  // the older one (it is the one to ack) and is told the request is still
  // being worked on. False when it is not waiting here.
  bool take_newer_delivery(const std::string& message_id, std::unique_ptr<bus::WorkItem>& item);
  // Shutdown: what never started and another worker can take.
  std::vector<WaitingRequest> take_redeliverable();
  // Every waiting item, to tell the queue they are still being worked on.
  template <class Fn>
  void for_each_item(Fn fn) {
    for (auto& [user, list] : by_user_)
      for (auto& w : list)
        if (w.item) fn(*w.item);
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  WaitingRequest* waiting(const std::string& message_id);

  std::size_t capacity_;
  std::size_t size_ = 0;
  std::deque<std::string> turn_;  // users with waiting requests, next first
  std::unordered_map<std::string, std::deque<WaitingRequest>> by_user_;
};

}  // namespace chat::worker
