#include "registry/memory_registry.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>

namespace chat::registry {

void MemoryRegistry::add(const ConnectionRef& c) {
  std::lock_guard lock(mutex_);
  Entry entry{pods_.intern(c.pod_id), ShortString(c.connection_id)};
  auto& entries = find_or_add(sessions_, c.session_id);
  if (std::find(entries.begin(), entries.end(), entry) == entries.end()) entries.push_back(std::move(entry));
}

void MemoryRegistry::remove(const ConnectionRef& c) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(c.session_id);
  auto pod = pods_.find(c.pod_id);
  if (it == sessions_.end() || !pod) return;
  Entry entry{*pod, ShortString(c.connection_id)};
  auto& entries = it->second;
  entries.erase(std::remove(entries.begin(), entries.end(), entry), entries.end());
  if (entries.empty()) sessions_.erase(it);
}

void MemoryRegistry::remove_pod(const std::string& pod_id, DoneCallback done) {
  {
    std::lock_guard lock(mutex_);
    auto pod = pods_.find(pod_id);
    for (auto it = sessions_.begin(); pod && it != sessions_.end();) {
      auto& entries = it->second;
      entries.erase(std::remove_if(entries.begin(), entries.end(), [pod](const Entry& e) { return e.pod == *pod; }),
                    entries.end());
      it = entries.empty() ? sessions_.erase(it) : std::next(it);
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
        if (std::find(pods.begin(), pods.end(), pods_.name(e.pod)) == pods.end()) pods.push_back(pods_.name(e.pod));
  }
  std::sort(pods.begin(), pods.end());
  boost::asio::post(executor_, [done = std::move(done), pods = std::move(pods)]() mutable { done({}, std::move(pods)); });
}

}  // namespace chat::registry
