#pragma once
// Helpers for the registry suites: blocking wrappers around the callback API
// and a raw synchronous hiredis client to look at the keys themselves, the way
// a worker in another language would.

#include <hiredis/hiredis.h>

#include <boost/asio/error.hpp>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "registry/session_registry.hpp"

namespace chat::test {

struct PodsResult {
  boost::system::error_code ec;
  std::vector<std::string> pods;  // sorted
};

inline PodsResult live_pods(registry::SessionRegistry& r, const std::string& session) {
  std::promise<PodsResult> done;
  auto result = done.get_future();
  r.live_pods(session, [&done](boost::system::error_code ec, std::vector<std::string> pods) {
    std::sort(pods.begin(), pods.end());
    done.set_value({ec, std::move(pods)});
  });
  if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
    return {boost::asio::error::operation_aborted, {"callback never ran"}};
  return result.get();
}

inline boost::system::error_code remove_pod(registry::SessionRegistry& r, const std::string& pod) {
  std::promise<boost::system::error_code> done;
  auto result = done.get_future();
  r.remove_pod(pod, [&done](boost::system::error_code ec) { done.set_value(ec); });
  if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return boost::asio::error::operation_aborted;
  return result.get();
}

using Pods = std::vector<std::string>;

// A plain blocking connection for looking at (and meddling with) the keys.
class RawRedis {
 public:
  explicit RawRedis(int port, const std::string& password = {}, unsigned db = 0) {
    context_ = redisConnect("127.0.0.1", port);
    if (context_ == nullptr || context_->err != 0)
      throw std::runtime_error("raw redis connect failed on port " + std::to_string(port));
    if (!password.empty()) run({"AUTH", password});
    run({"SELECT", std::to_string(db)});
  }
  ~RawRedis() { redisFree(context_); }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;

  // Strings of a reply: the elements of an array, or the single string or
  // status; an integer as its decimal text; nil as no element.
  std::vector<std::string> run(const std::vector<std::string>& argv) {
    std::vector<const char*> args;
    std::vector<std::size_t> lengths;
    for (const auto& a : argv) {
      args.push_back(a.data());
      lengths.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(context_, static_cast<int>(args.size()), args.data(), lengths.data()));
    if (reply == nullptr) throw std::runtime_error("raw redis: connection lost");
    std::vector<std::string> out;
    collect(reply, out);
    bool error = reply->type == REDIS_REPLY_ERROR;
    freeReplyObject(reply);
    if (error) throw std::runtime_error("raw redis: " + argv[0] + ": " + (out.empty() ? "" : out[0]));
    return out;
  }

  std::vector<std::string> sorted(const std::vector<std::string>& argv) {
    auto out = run(argv);
    std::sort(out.begin(), out.end());
    return out;
  }

  long long integer(const std::vector<std::string>& argv) { return std::stoll(run(argv).at(0)); }

 private:
  static void collect(const redisReply* r, std::vector<std::string>& out) {
    switch (r->type) {
      case REDIS_REPLY_ARRAY:
        for (std::size_t i = 0; i < r->elements; ++i) collect(r->element[i], out);
        break;
      case REDIS_REPLY_INTEGER: out.push_back(std::to_string(r->integer)); break;
      case REDIS_REPLY_NIL: break;
      default: out.emplace_back(r->str, r->len);
    }
  }

  redisContext* context_ = nullptr;
};

}  // namespace chat::test
