#include "worker/fair_queue.hpp"

#include <algorithm>

namespace chat::worker {

bool FairQueue::push(WaitingRequest&& w) {
  if (size_ >= capacity_) return false;
  auto& list = by_user_[w.request.user_id];
  if (list.empty()) turn_.push_back(w.request.user_id);
  list.push_back(std::move(w));
  ++size_;
  return true;
}

std::optional<WaitingRequest> FairQueue::pop(const std::function<std::size_t(const std::string&)>& running) {
  if (turn_.empty()) return std::nullopt;
  auto next = turn_.begin();
  auto fewest = running(*next);
  for (auto it = std::next(turn_.begin()); it != turn_.end() && fewest > 0; ++it)
    if (auto n = running(*it); n < fewest) fewest = n, next = it;
  auto user = std::move(*next);
  turn_.erase(next);
  auto it = by_user_.find(user);
  auto w = std::move(it->second.front());
  it->second.pop_front();
  --size_;
  if (it->second.empty()) by_user_.erase(it);
  else turn_.push_back(std::move(user));  // the user's next request waits for everyone else's turn
  return w;
}

const protocol::WorkflowRequest* FairQueue::find(const std::string& message_id) const {
  const auto* w = const_cast<FairQueue*>(this)->waiting(message_id);
  return w ? &w->request : nullptr;
}

WaitingRequest* FairQueue::waiting(const std::string& message_id) {
  for (auto& [user, list] : by_user_)
    for (auto& w : list)
      if (w.request.message_id == message_id) return &w;
  return nullptr;
}

bool FairQueue::take_newer_delivery(const std::string& message_id, std::unique_ptr<bus::WorkItem>& item) {
  auto* w = waiting(message_id);
  if (!w) return false;
  w->item = std::move(item);
  w->item->in_progress();
  return true;
}

std::optional<WaitingRequest> FairQueue::remove(const std::string& message_id) {
  for (auto it = by_user_.begin(); it != by_user_.end(); ++it) {
    auto& list = it->second;
    auto found = std::find_if(list.begin(), list.end(),
                              [&](const WaitingRequest& w) { return w.request.message_id == message_id; });
    if (found == list.end()) continue;
    auto w = std::move(*found);
    list.erase(found);
    --size_;
    if (list.empty()) {
      std::erase(turn_, it->first);
      by_user_.erase(it);
    }
    return w;
  }
  return std::nullopt;
}

std::vector<WaitingRequest> FairQueue::take_redeliverable() {
  std::vector<WaitingRequest> out, keep;
  while (auto w = pop([](const std::string&) { return 0; })) (w->item->final_attempt() ? keep : out).push_back(std::move(*w));
  for (auto& w : keep) push(std::move(w));
  return out;
}

}  // namespace chat::worker
