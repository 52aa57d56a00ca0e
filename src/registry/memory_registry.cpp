#include "registry/memory_registry.hpp"

#include <boost/asio/post.hpp>

namespace chat::registry {

void MemoryRegistry::add(const ConnectionRef& c) {
  std::lock_guard lock(mutex_);
  sessions_[c.session_id].emplace(c.pod_id, c.connection_id);
}

void MemoryRegistry::remove(const ConnectionRef& c) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(c.session_id);
  if (it == sessions_.end()) return;
  it->second.erase({c.pod_id, c.connection_id});
  if (it->second.empty()) sessions_.erase(it);
}

void MemoryRegistry::remove_pod(const std::string& pod_id, DoneCallback done) {
  {
    std::lock_guard lock(mutex_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      std::erase_if(it->second, [&](const auto& member) { return member.first == pod_id; });
      it = it->second.empty() ? sessions_.erase(it) : std::next(it);
    }
  }
  if (done) boost::asio::post(executor_, [done = std::move(done)] { done({}); });
}

void MemoryRegistry::live_pods(const std::string& session_id, PodsCallback done) {
  std::vector<std::string> pods;
  {
    std::lock_guard lock(mutex_);
    if (auto it = sessions_.find(session_id); it != sessions_.end())
      for (const auto& [pod, conn] : it->second)
        if (pods.empty() || pods.back() != pod) pods.push_back(pod);
  }
  boost::asio::post(executor_, [done = std::move(done), pods = std::move(pods)]() mutable { done({}, std::move(pods)); });
}

}  // namespace chat::registry
