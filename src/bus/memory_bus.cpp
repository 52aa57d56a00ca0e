#include "bus/memory_bus.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "common/identifier.hpp"
#include "bus/subject_pattern.hpp"

namespace asio = boost::asio;

namespace chat::bus {

struct Envelope {
  std::string subject;
  std::string payload;
  std::string reply_to;
  Headers headers;
};

struct MemoryBus::Subscriber {
  Subscriber(std::string p, std::string g, MessageHandler h, asio::any_io_executor ex)
      : pattern(std::move(p)), queue_group(std::move(g)), handler(std::move(h)), strand(asio::make_strand(ex)) {}

  std::string pattern;
  std::string queue_group;
  MessageHandler handler;
  asio::strand<asio::any_io_executor> strand;
  // Held while the handler runs, so unsubscribing can wait for a running call.
  // Recursive: a handler may drop its own subscription.
  std::recursive_mutex running;
  bool active = true;  // guarded by `running`
};

class MemorySubscription final : public Subscription {
 public:
  MemorySubscription(MemoryBus& bus, std::shared_ptr<MemoryBus::Subscriber> s, std::shared_ptr<std::atomic<bool>> bus_alive)
      : bus_(bus), sub_(std::move(s)), bus_alive_(std::move(bus_alive)) {}
  ~MemorySubscription() override {
    if (bus_alive_->load()) bus_.remove(sub_.get());
    std::lock_guard lock(sub_->running);
    sub_->active = false;
  }

  void drain(std::function<void()> drained) override {
    if (bus_alive_->load()) return bus_.drain(sub_, std::move(drained));
    if (drained) drained();  // the bus is gone: nothing is on its way
  }

 private:
  MemoryBus& bus_;
  std::shared_ptr<MemoryBus::Subscriber> sub_;
  std::shared_ptr<std::atomic<bool>> bus_alive_;
};

MemoryBus::MemoryBus(asio::any_io_executor executor) : executor_(std::move(executor)) {}

MemoryBus::~MemoryBus() { alive_->store(false); }

void MemoryBus::publish(std::string subject, std::string payload, Headers headers, PublishCallback done) {
  publish_with_reply(std::move(subject), std::move(payload), {}, std::move(done), std::move(headers));
}

void MemoryBus::publish_with_reply(std::string subject, std::string payload, std::string reply_to, PublishCallback done,
                                   Headers headers) {
  auto env = std::make_shared<const Envelope>(
      Envelope{std::move(subject), std::move(payload), std::move(reply_to), std::move(headers)});
  {
    std::lock_guard lock(mutex_);
    std::unordered_map<std::string, std::vector<std::shared_ptr<Subscriber>>> groups;
    for (const auto& s : subscribers_) {
      if (!subject_matches(s->pattern, env->subject)) continue;
      if (s->queue_group.empty()) deliver(s, env);
      else groups[s->queue_group].push_back(s);
    }
    for (auto& [group, members] : groups) {
      auto& next = round_robin_[group];
      deliver(members[next++ % members.size()], env);
    }
  }
  if (done) asio::post(executor_, [done = std::move(done)] { done({}); });
}

void MemoryBus::deliver(const std::shared_ptr<Subscriber>& to, const std::shared_ptr<const Envelope>& env) {
  asio::post(to->strand, [to, env] {
    std::lock_guard lock(to->running);
    if (!to->active) return;
    to->handler(Message{env->subject, env->payload, env->reply_to, env->headers});
  });
}

std::unique_ptr<Subscription> MemoryBus::subscribe(std::string pattern, std::string queue_group, MessageHandler handler) {
  auto s = std::make_shared<Subscriber>(std::move(pattern), std::move(queue_group), std::move(handler), executor_);
  {
    std::lock_guard lock(mutex_);
    subscribers_.push_back(s);
  }
  return std::make_unique<MemorySubscription>(*this, s, alive_);
}

void MemoryBus::remove(const Subscriber* s) {
  std::lock_guard lock(mutex_);
  std::erase_if(subscribers_, [s](const auto& p) { return p.get() == s; });
}

void MemoryBus::drain(const std::shared_ptr<Subscriber>& s, std::function<void()> drained) {
  std::lock_guard lock(mutex_);
  std::erase_if(subscribers_, [&s](const auto& p) { return p == s; });
  // Behind every delivery already posted to its strand (publish posts under this lock).
  asio::post(s->strand, [s, drained = std::move(drained)] {
    std::lock_guard running(s->running);
    if (s->active && drained) drained();
  });
}

void MemoryBus::request(std::string subject, std::string payload, std::chrono::milliseconds timeout, ReplyCallback done) {
  // One-shot inbox: the first reply or the timer wins. The timer's handler owns
  // the pending state and always runs (on timeout, or cancelled by the reply).
  struct Pending {
    std::mutex mutex;  // guards `done`: the reply and the timer race for it
    ReplyCallback done;
    std::unique_ptr<Subscription> inbox;
    asio::steady_timer timer;
    explicit Pending(asio::any_io_executor ex) : timer(std::move(ex)) {}
    void finish(boost::system::error_code ec, std::string reply) {
      ReplyCallback cb;
      {
        std::lock_guard lock(mutex);
        cb = std::exchange(done, nullptr);
      }
      if (cb) cb(ec, std::move(reply));
    }
  };
  auto pending = std::make_shared<Pending>(executor_);
  pending->done = std::move(done);
  auto inbox = "_INBOX." + new_identifier("");
  std::weak_ptr<Pending> weak = pending;
  pending->inbox = subscribe(inbox, {}, [weak](const Message& m) {
    if (auto p = weak.lock()) {
      p->finish({}, std::string(m.payload));
      p->timer.cancel();
    }
  });
  pending->timer.expires_after(timeout);
  pending->timer.async_wait([pending](boost::system::error_code ec) {
    if (!ec) pending->finish(asio::error::timed_out, {});
    pending->inbox.reset();
  });
  publish_with_reply(std::move(subject), std::move(payload), std::move(inbox), {});
}

}  // namespace chat::bus
