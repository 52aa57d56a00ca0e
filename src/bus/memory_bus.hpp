#pragma once
// The in-process bus of the embedded default: NATS subject semantics (wildcards,
// queue groups, request-reply) without a network. Each subscription gets its own
// strand, so its handler runs on the process's io_context, one message at a time,
// in publish order.

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "bus/message_bus.hpp"

namespace chat::bus {

class MemoryBus final : public MessageBus {
 public:
  explicit MemoryBus(boost::asio::any_io_executor executor);
  ~MemoryBus() override;

  using MessageBus::publish;
  void publish(std::string subject, std::string payload, Headers headers, PublishCallback done) override;
  std::unique_ptr<Subscription> subscribe(std::string pattern, std::string queue_group, MessageHandler handler) override;
  void request(std::string subject, std::string payload, std::chrono::milliseconds timeout, ReplyCallback done) override;
  ComponentStatus status() const override { return {"memory", true, true}; }

  struct Subscriber;

 private:
  void publish_with_reply(std::string subject, std::string payload, std::string reply_to, PublishCallback done,
                          Headers headers = {});
  void deliver(const std::shared_ptr<Subscriber>& to, const std::shared_ptr<const struct Envelope>& env);
  void remove(const Subscriber* s);
  void drain(const std::shared_ptr<Subscriber>& s, std::function<void()> drained);

  boost::asio::any_io_executor executor_;
  // Guards subscribers_ and round_robin_; held to pick targets and post to
  // them (so that a drain's marker goes behind every delivery to its
  // subscriber), never while a handler runs.
  std::mutex mutex_;
  std::vector<std::shared_ptr<Subscriber>> subscribers_;
  std::unordered_map<std::string, std::size_t> round_robin_;
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
  friend class MemorySubscription;
};

}  // namespace chat::bus
