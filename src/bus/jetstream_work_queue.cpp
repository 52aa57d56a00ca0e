#include "bus/jetstream_work_queue.hpp"

#include <boost/asio/error.hpp>

#include <atomic>
#include <thread>

#include "log/log.hpp"

namespace asio = boost::asio;

namespace chat::bus {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kFetchWait{1'000};
// A fetch that "timed out" sooner than this returned early (nats.c #631).
constexpr std::chrono::milliseconds kEarlyReturn{100};
constexpr std::chrono::milliseconds kPause{200};
constexpr int kMaxBatch = 64;
// RATE_LIMIT_RUNNING_REPLIES keeps a session's queue short; a scan stops here
// when that limit is off.
constexpr int kMaxWithdrawScan = 64;

// nats.c acks through the message's subscription: each item keeps it alive, so
// a worker may ack after its fetch loop stopped.
using SharedSubscription = std::shared_ptr<natsSubscription>;

class JetStreamWorkItem final : public WorkItem {
 public:
  JetStreamWorkItem(SharedSubscription sub, natsMsg* msg, unsigned attempt, bool final)
      : msg_(msg), sub_(std::move(sub)), attempt_(attempt), final_(final) {}

  std::string_view payload() const override {
    return {natsMsg_GetData(msg_.get()), static_cast<std::size_t>(natsMsg_GetDataLength(msg_.get()))};
  }
  std::string_view subject() const override { return natsMsg_GetSubject(msg_.get()); }
  std::string header(std::string_view key) const override {
    const char* value = nullptr;
    if (natsMsgHeader_Get(msg_.get(), std::string(key).c_str(), &value) != NATS_OK || value == nullptr) return {};
    return value;
  }
  unsigned attempt() const override { return attempt_; }
  bool final_attempt() const override { return final_; }
  // Each is one publish on the connection; a lost one means a redelivery, which
  // the worker handles as a new attempt.
  void in_progress() override { report("in_progress", natsMsg_InProgress(msg_.get(), nullptr)); }
  void ack() override { report("ack", natsMsg_Ack(msg_.get(), nullptr)); }
  void give_back() override { report("nak", natsMsg_Nak(msg_.get(), nullptr)); }

 private:
  static void report(const char* what, natsStatus s) {
    if (s != NATS_OK) log::warn("work_item_reply_failed", {{"reply", what}, {"error", to_error_code(s).message()}});
  }

  NatsMsgPtr msg_;  // destroyed before the subscription it came from
  SharedSubscription sub_;
  unsigned attempt_;
  bool final_;
};

// One worker's fetch loop on its own thread.
class PullConsumer final : public Subscription {
 public:
  PullConsumer(JetStream& js, FreeSlots free_slots, WorkHandler handler)
      : js_(js), free_slots_(std::move(free_slots)), handler_(std::move(handler)), thread_([this] { run(); }) {}

  ~PullConsumer() override {
    stopping_ = true;
    thread_.join();
  }

 private:
  void run() {
    while (!stopping_) {
      if (!js_.ready() || !subscribe()) {
        pause(kPause * 5);
        continue;
      }
      auto slots = std::min<std::size_t>(free_slots_(), kMaxBatch);
      if (slots == 0) {
        pause(std::chrono::milliseconds{20});
        continue;
      }
      fetch(static_cast<int>(slots));
    }
    sub_.reset();
  }

  bool subscribe() {
    if (sub_) return true;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = kWorkStream;
    so.Consumer = kWorkConsumer;
    natsSubscription* raw = nullptr;
    jsErrCode code = static_cast<jsErrCode>(0);
    natsStatus s = js_PullSubscribe(&raw, js_.context(), "chat.workflow.execute.>", kWorkConsumer, nullptr, &so, &code);
    if (s != NATS_OK) {
      log::warn("work_consumer_unavailable", {{"error", natsStatus_GetText(s)}, {"code", static_cast<std::int64_t>(code)}});
      return false;
    }
    sub_ = SharedSubscription(raw, natsSubscription_Destroy);
    return true;
  }

  void fetch(int batch) {
    natsMsgList list{};
    jsErrCode code = static_cast<jsErrCode>(0);
    auto started = Clock::now();
    natsStatus s = natsSubscription_Fetch(&list, sub_.get(), batch, kFetchWait.count(), &code);
    if (s == NATS_TIMEOUT) {
      if (Clock::now() - started < kEarlyReturn) pause(kPause);
      return;
    }
    if (s != NATS_OK) {
      if (js_.bus().connected()) log::warn("work_fetch_failed", {{"error", natsStatus_GetText(s)}});
      pause(kPause);
      return;
    }
    for (int i = 0; i < list.Count; ++i) deliver(std::exchange(list.Msgs[i], nullptr));
    natsMsgList_Destroy(&list);
  }

  void deliver(natsMsg* msg) {
    jsMsgMetaData* meta = nullptr;
    unsigned attempt = 1;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
      attempt = static_cast<unsigned>(meta->NumDelivered);
      jsMsgMetaData_Destroy(meta);
    }
    bool final = js_.options().max_deliver > 0 && attempt >= static_cast<unsigned>(js_.options().max_deliver);
    handler_(std::make_unique<JetStreamWorkItem>(sub_, msg, attempt, final));
  }

  void pause(std::chrono::milliseconds d) {
    for (auto until = Clock::now() + d; !stopping_ && Clock::now() < until;)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }

  JetStream& js_;
  FreeSlots free_slots_;
  WorkHandler handler_;
  std::atomic<bool> stopping_{false};
  SharedSubscription sub_;  // fetch thread only
  std::thread thread_;       // last: starts once everything above exists
};

void not_withdrawn(const std::string& id, natsStatus s, jsErrCode code = {}) {
  log::warn("request_not_withdrawn", {{"message_id", id}, {"error", natsStatus_GetText(s)}, {"js_code", static_cast<int>(code)}});
}

// The first request queued on `subject` after stream sequence `after`, by
// direct get (which the work stream allows for this).
std::pair<natsStatus, NatsMsgPtr> queued_after(JetStream& js, const std::string& subject, std::uint64_t after) {
  jsDirectGetMsgOptions o;
  jsDirectGetMsgOptions_Init(&o);
  o.Sequence = after + 1;
  o.NextBySubject = subject.c_str();
  natsMsg* msg = nullptr;
  auto s = js_DirectGetMsg(&msg, js.context(), kWorkStream, nullptr, &o);
  return {s, NatsMsgPtr(msg)};
}

bool is_request(natsMsg* queued, const std::string& id) {
  const char* queued_id = nullptr;
  return natsMsgHeader_Get(queued, "Nats-Msg-Id", &queued_id) == NATS_OK && queued_id == id;
}

void delete_queued(JetStream& js, std::uint64_t seq, const std::string& id) {
  if (js.stopping()) return;
  jsErrCode code{};
  if (auto s = js_DeleteMsg(js.context(), kWorkStream, seq, nullptr, &code); s != NATS_OK) return not_withdrawn(id, s, code);
  log::info("request_withdrawn", {{"message_id", id}});
}

}  // namespace

void JetStreamWorkQueue::submit(std::string subject, std::string payload, std::string id, Headers headers,
                                PublishCallback done) {
  if (!js_.ready()) {
    js_.bus().defer([done = std::move(done)] { done(asio::error::not_connected); });
    return;
  }
  js_.publish(subject, payload, id, std::move(headers), std::move(done));
}

void JetStreamWorkQueue::withdraw(const std::string& subject, const std::string& id) {
  // Disconnected, each call would wait out its timeout on the JetStream
  // thread, ahead of the chunk-log reads queued there.
  if (!js_.ready() || !js_.bus().connected()) return;
  js_.run_blocking([&js = js_, subject, id] {
    std::uint64_t seq = 0;  // the session's requests, oldest first
    for (int looked = 0; !js.stopping(); ++looked) {
      if (looked == kMaxWithdrawScan) {
        log::warn("request_not_withdrawn", {{"message_id", id}, {"reason", "too many requests of the session wait"}});
        return;
      }
      auto [s, queued] = queued_after(js, subject, seq);
      if (s == NATS_NOT_FOUND) return;  // not queued (any more): a worker acked it
      if (s != NATS_OK) return not_withdrawn(id, s);
      seq = natsMsg_GetSequence(queued.get());
      if (is_request(queued.get(), id)) return delete_queued(js, seq, id);
    }
  });
}

std::unique_ptr<Subscription> JetStreamWorkQueue::consume(FreeSlots free_slots, WorkHandler handler) {
  return std::make_unique<PullConsumer>(js_, std::move(free_slots), std::move(handler));
}

ComponentStatus JetStreamWorkQueue::status() const { return {"jetstream", false, js_.bus().connected() && js_.ready()}; }

}  // namespace chat::bus
