#include "http_client/pool.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <vector>

namespace chat::http_client {
namespace {

// An idle keep-alive connection must have nothing to read: EOF means the
// server closed it, stray bytes mean it is out of step. Either way, drop it.
bool still_usable(HttpConnection& c) {
  if (!c.socket().is_open() || c.buffer.size() != 0) return false;
  char byte;
  auto n = ::recv(c.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

std::unique_ptr<HttpConnection> HttpPool::take(const std::string& key) {
  std::vector<std::unique_ptr<HttpConnection>> dropped;  // closed outside the lock
  std::unique_ptr<HttpConnection> found;
  {
    std::lock_guard lock(mutex_);
    auto it = idle_.find(key);
    if (it == idle_.end()) return nullptr;
    auto& list = it->second;
    auto oldest_allowed = std::chrono::steady_clock::now() - max_idle_;
    while (!list.empty() && !found) {
      auto c = std::move(list.back());
      list.pop_back();
      if (c->idle_since >= oldest_allowed && still_usable(*c)) found = std::move(c);
      else dropped.push_back(std::move(c));
    }
    // Older ones expire first, from the front.
    while (!list.empty() && list.front()->idle_since < oldest_allowed) {
      dropped.push_back(std::move(list.front()));
      list.pop_front();
    }
    if (list.empty()) idle_.erase(it);
  }
  for (auto& c : dropped) c->close();
  return found;
}

void HttpPool::put(std::unique_ptr<HttpConnection> connection) {
  if (max_per_origin_ == 0) return connection->close();
  connection->idle_since = std::chrono::steady_clock::now();
  std::unique_ptr<HttpConnection> evicted;
  {
    std::lock_guard lock(mutex_);
    auto& list = idle_[connection->pool_key];
    list.push_back(std::move(connection));
    if (list.size() > max_per_origin_) {
      evicted = std::move(list.front());
      list.pop_front();
    }
  }
  if (evicted) evicted->close();
}

std::size_t HttpPool::idle() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
}

}  // namespace chat::http_client
