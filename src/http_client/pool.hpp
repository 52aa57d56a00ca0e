#pragma once
// Idle keep-alive connections, per origin, for every strand of the process.
// Bounded per origin; an idle connection older than max_idle or already closed
// by its server is dropped when it would be handed out. Thread-safe.

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "http_client/connection.hpp"

namespace chat::http_client {

class HttpPool {
 public:
  HttpPool(std::size_t max_idle_per_origin, std::chrono::milliseconds max_idle)
      : max_per_origin_(max_idle_per_origin), max_idle_(max_idle) {}

  // A live idle connection to `key`, most recently used first; null if none.
  std::unique_ptr<HttpConnection> take(const std::string& key);
  // Keeps `connection` for reuse, or closes it when the origin's pool is full.
  void put(std::unique_ptr<HttpConnection> connection);

  std::size_t idle() const;

 private:
  std::size_t max_per_origin_;
  std::chrono::milliseconds max_idle_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::deque<std::unique_ptr<HttpConnection>>> idle_;
};

}  // namespace chat::http_client
