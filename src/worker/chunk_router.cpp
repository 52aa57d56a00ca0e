#include "worker/chunk_router.hpp"

#include <algorithm>
#include <mutex>
#include <unordered_map>

#include "protocol/subjects.hpp"

namespace chat::worker {

struct ChunkRouter::State {
  struct Entry {
    SubjectsPtr subjects;
    std::chrono::steady_clock::time_point fetched{};
    bool fetching = false;
    std::vector<RouteCallback> waiters;
  };

  State(registry::SessionRegistry& r, std::chrono::milliseconds t) : registry(r), ttl(t) {}

  registry::SessionRegistry& registry;
  std::chrono::milliseconds ttl;
  std::mutex mutex;  // guards entries: generations on many threads share the cache
  std::unordered_map<std::string, Entry> entries;

  bool fresh(const Entry& e, std::chrono::steady_clock::time_point now) const {
    return !e.fetching && e.fetched.time_since_epoch().count() != 0 && now - e.fetched < ttl;
  }

  void prune(std::chrono::steady_clock::time_point now) {
    if (entries.size() < 4096) return;
    std::erase_if(entries, [&](const auto& kv) { return !kv.second.fetching && now - kv.second.fetched >= ttl; });
  }
};

ChunkRouter::ChunkRouter(registry::SessionRegistry& registry, std::chrono::milliseconds ttl)
    : state_(std::make_shared<State>(registry, ttl)) {}

ChunkRouter::~ChunkRouter() = default;

ChunkRouter::SubjectsPtr ChunkRouter::cached(const std::string& session_id) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(state_->mutex);
  auto it = state_->entries.find(session_id);
  if (it == state_->entries.end() || !state_->fresh(it->second, now)) return nullptr;
  return it->second.subjects;
}

void ChunkRouter::forget(const std::string& session_id) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->entries.find(session_id);
  if (it != state_->entries.end() && !it->second.fetching) state_->entries.erase(it);
}

void ChunkRouter::add_pod(const std::string& session_id, const std::string& pod_id) {
  auto subject = subjects::pod_response(pod_id);
  std::lock_guard lock(state_->mutex);
  auto it = state_->entries.find(session_id);
  if (it == state_->entries.end() || it->second.fetching || !it->second.subjects) return;  // next look-up sees it
  const auto& current = *it->second.subjects;
  if (std::find(current.begin(), current.end(), subject) != current.end()) return;
  auto updated = std::make_shared<Subjects>();
  // The broadcast subject only stood for "no pod": a pod is now known.
  for (const auto& s : current)
    if (s != subjects::broadcast(session_id)) updated->push_back(s);
  updated->push_back(std::move(subject));
  it->second.subjects = std::move(updated);
}

void ChunkRouter::resolve(const std::string& session_id, RouteCallback done) {
  auto now = std::chrono::steady_clock::now();
  {
    std::unique_lock lock(state_->mutex);
    state_->prune(now);
    auto& e = state_->entries[session_id];
    if (state_->fresh(e, now)) {
      auto subjects = e.subjects;
      lock.unlock();
      return done(std::move(subjects));
    }
    e.waiters.push_back(std::move(done));
    if (e.fetching) return;
    e.fetching = true;
  }
  // The state outlives this router if the registry answers late.
  state_->registry.live_pods(session_id, [state = state_, session_id](boost::system::error_code ec,
                                                                      std::vector<std::string> pods) {
    auto subjects = std::make_shared<Subjects>();
    if (ec || pods.empty()) {
      subjects->push_back(subjects::broadcast(session_id));
    } else {
      for (const auto& pod : pods) subjects->push_back(subjects::pod_response(pod));
    }
    std::vector<RouteCallback> waiters;
    {
      std::lock_guard lock(state->mutex);
      auto& e = state->entries[session_id];
      e.subjects = subjects;
      e.fetched = std::chrono::steady_clock::now();
      e.fetching = false;
      waiters.swap(e.waiters);
    }
    for (auto& w : waiters) w(subjects);
  });
}

}  // namespace chat::worker
