#include "registry/memory_registry.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>

namespace chat::registry {

void MemoryRegistry::add(const ConnectionRef& c) {
  std::lock_guard lock(mutex_);
  auto& entries = sessions_[c.session_id];
  Entry entry{c.pod_id, c.connection_id};
  if (std::find(entries.begin(), entries.end(), entry) == entries.end()) entries.push_back(std::move(entry));
}

void MemoryRegistry::remove(const ConnectionRef& c) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(c.session_id);
  if (it == sessions_.end()) return;
  std::erase(it->second, Entry{c.pod_id, c.connection_id});
  if (it->second.empty()) sessions_.erase(it);
}

void MemoryRegistry::remove_pod(const std::string& pod_id, DoneCallback done) {
  {
    std::lock_guard lock(mutex_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      std::erase_if(it->second, [&](const Entry& e) { return e.pod_id == pod_id; });
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
      for (const auto& e : it->second)
        if (std::find(pods.begin(), pods.end(), e.pod_id) == pods.end()) pods.push_back(e.pod_id);
  }
  std::sort(pods.begin(), pods.end());
  boost::asio::post(executor_, [done = std::move(done), pods = std::move(pods)]() mutable { done({}, std::move(pods)); });
}

}  // namespace chat::registry
