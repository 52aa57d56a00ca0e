#pragma once
// Helpers shared by the bus suites: a thread-safe message collector, waiting
// for callbacks, and a round trip that proves a bus's subscriptions are live.

#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "bus/message_bus.hpp"
#include "common/identifier.hpp"

namespace chat::test {

struct Received {
  std::string subject;
  std::string payload;
  std::string reply_to;
  bus::Headers headers;
};

// Collects what a handler receives; handlers run on bus threads.
class Collector {
 public:
  bus::MessageHandler handler() {
    return [this](const bus::Message& m) {
      std::lock_guard lock(mutex_);
      items_.push_back({std::string(m.subject), std::string(m.payload), std::string(m.reply_to), m.headers});
      changed_.notify_all();
    };
  }

  bool wait_for(std::size_t count, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, limit, [&] { return items_.size() >= count; });
  }

  std::vector<Received> items() {
    std::lock_guard lock(mutex_);
    return items_;
  }

  std::size_t size() {
    std::lock_guard lock(mutex_);
    return items_.size();
  }

 private:
  std::mutex mutex_;  // guards items_
  std::condition_variable changed_;
  std::vector<Received> items_;
};

inline boost::system::error_code publish_and_wait(bus::MessageBus& bus, std::string subject, std::string payload) {
  std::promise<boost::system::error_code> done;
  auto result = done.get_future();
  bus.publish(std::move(subject), std::move(payload), [&done](boost::system::error_code ec) { done.set_value(ec); });
  if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return boost::asio::error::timed_out;
  return result.get();
}

struct Reply {
  boost::system::error_code ec;
  std::string payload;
};

inline Reply request_and_wait(bus::MessageBus& bus, std::string subject, std::string payload,
                              std::chrono::milliseconds timeout) {
  std::promise<Reply> done;
  auto result = done.get_future();
  bus.request(std::move(subject), std::move(payload), timeout,
              [&done](boost::system::error_code ec, std::string reply) { done.set_value({ec, std::move(reply)}); });
  if (result.wait_for(timeout + std::chrono::seconds(10)) != std::future_status::ready)
    return {boost::asio::error::operation_aborted, "callback never ran"};
  return result.get();
}

// A request answered by a responder on the same bus. The server handles one
// connection's commands in order, so once the answer is back every
// subscription made on `bus` before this call is live at the server.
inline bool sync(bus::MessageBus& bus) {
  auto subject = "sync." + new_identifier("s");
  auto responder = bus.subscribe(subject, {}, [&bus](const bus::Message& m) {
    bus.publish(std::string(m.reply_to), "ok");
  });
  return request_and_wait(bus, subject, "", std::chrono::seconds(5)).payload == "ok";
}

}  // namespace chat::test
