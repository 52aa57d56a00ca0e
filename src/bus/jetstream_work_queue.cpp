#include "bus/jetstream_work_queue.hpp"

#include <openssl/evp.h>

#include <boost/asio/error.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string_view>
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
constexpr std::chrono::milliseconds kLookupTimeout{5'000};

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
    {
      std::lock_guard lock(drain_mutex_);
      drained_ = nullptr;
    }
    stopping_ = true;
    thread_.join();
  }

  // What a fetch under way brings is handed over before `drained` runs (on the
  // fetch thread, which it must not join); the server keeps the rest.
  void drain(std::function<void()> drained) override {
    {
      std::lock_guard lock(drain_mutex_);
      drained_ = std::move(drained);
    }
    stopping_ = true;
  }

 private:
  void run() {
    fetch_until_stopped();
    std::lock_guard lock(drain_mutex_);
    if (auto drained = std::exchange(drained_, nullptr)) drained();
  }

  void fetch_until_stopped() {
    while (!stopping_) {
      if (!js_.ready()) {
        sub_.reset();  // the consumer is being made (again): bind to the one that will be
        pause(kPause * 5);
        continue;
      }
      if (!subscribe()) {
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
    // Freed a while after its last message goes, not at once: nats.c's reader
    // may still be handing it a fetch's late answer (NatsBus::retire).
    sub_ = js_.bus().share_subscription(raw);
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
  std::mutex drain_mutex_;  // guards drained_: set by drain(), run by the fetch thread, cleared by the destructor
  std::function<void()> drained_;
  SharedSubscription sub_;  // fetch thread only
  std::thread thread_;       // last: starts once everything above exists
};

void not_withdrawn(const std::string& id, std::string_view why) {
  log::warn("request_not_withdrawn", {{"message_id", id}, {"error", why}});
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - (text.ends_with("==") ? 2 : text.ends_with('=') ? 1 : 0));
  return out;
}

// The Nats-Msg-Id in a stored message's header block ("NATS/1.0\r\nKey: value\r\n...").
std::string message_id_in(std::string_view headers) {
  constexpr std::string_view kKey = "\r\nNats-Msg-Id:";
  auto at = headers.find(kKey);
  if (at == headers.npos) return {};
  auto value = headers.substr(at + kKey.size());
  value = value.substr(0, value.find("\r\n"));
  auto first = value.find_first_not_of(' ');
  return first == value.npos ? std::string{} : std::string(value.substr(first));
}

struct QueuedRequest {
  std::uint64_t seq = 0;
  std::string id;
};

// The first request queued on `subject` after stream sequence `after`, or
// nullopt: none (with `error` empty), or the look-up failed. It is the
// STREAM.MSG.GET API with next_by_subj, which nats.c 3.4 does not offer; its
// answer comes from the stream's leader (a direct get may come from a replica
// that lags, and nats-server 2.9.10 does not turn direct gets on for a
// replicated stream that an update allows them on).
std::optional<QueuedRequest> queued_after(JetStream& js, const std::string& subject, std::uint64_t after,
                                          std::string& error) {
  static const std::string api = std::string("$JS.API.STREAM.MSG.GET.") + kWorkStream;
  auto ask = boost::json::serialize(boost::json::object{{"seq", after + 1}, {"next_by_subj", subject}});
  natsMsg* raw = nullptr;
  if (auto s = natsConnection_Request(&raw, js.bus().native_connection(), api.c_str(), ask.data(),
                                      static_cast<int>(ask.size()), kLookupTimeout.count());
      s != NATS_OK) {
    error = natsStatus_GetText(s);
    return std::nullopt;
  }
  NatsMsgPtr reply(raw);
  boost::system::error_code ec;
  auto answer = boost::json::parse(std::string_view(natsMsg_GetData(reply.get()),
                                                    static_cast<std::size_t>(natsMsg_GetDataLength(reply.get()))), ec);
  const auto* o = answer.if_object();
  if (ec || !o) {
    error = "an answer that is not a JSON object";
    return std::nullopt;
  }
  if (const auto* e = o->if_contains("error")) {
    const auto* code = e->is_object() ? e->as_object().if_contains("code") : nullptr;
    if (!(code && code->is_int64() && code->as_int64() == 404)) error = boost::json::serialize(*e);
    return std::nullopt;
  }
  const auto* m = o->if_contains("message");
  const auto* seq = m && m->is_object() ? m->as_object().if_contains("seq") : nullptr;
  const auto* hdrs = m && m->is_object() ? m->as_object().if_contains("hdrs") : nullptr;
  if (!seq || !seq->is_number()) {
    error = "an answer without the message's sequence";
    return std::nullopt;
  }
  QueuedRequest found{seq->to_number<std::uint64_t>(), {}};
  if (hdrs && hdrs->is_string())
    if (auto block = base64_decode(hdrs->as_string())) found.id = message_id_in(*block);
  return found;
}

void delete_queued(JetStream& js, std::uint64_t seq, const std::string& id) {
  if (js.stopping()) return;
  jsErrCode code{};
  if (auto s = js_DeleteMsg(js.context(), kWorkStream, seq, nullptr, &code); s != NATS_OK)
    return not_withdrawn(id, std::string(natsStatus_GetText(s)) + " (js_code " + std::to_string(code) + ")");
  log::info("request_withdrawn", {{"message_id", id}});
}

}  // namespace

void JetStreamWorkQueue::submit(std::string subject, std::string payload, std::string id, Headers headers,
                                PublishCallback done) {
  if (!js_.ready()) {
    js_.bus().defer([done = std::move(done)] { done(asio::error::not_connected); });
    return;
  }
  // Refused after a timeout, a request the stream stored all the same would
  // still run later: a reply for a chat its client was told failed.
  js_.publish(subject, payload, id, std::move(headers), std::move(done), JetStream::Resend::once_unacknowledged);
}

void JetStreamWorkQueue::withdraw(const std::string& subject, const std::string& id) {
  // Asked while the server is away (a reply ended meanwhile, or a request
  // whose acknowledgement never came): done once it is back, or the request
  // would run later.
  js_.run_blocking_when_up([&js = js_, subject, id](bool up) {
    if (!up) return not_withdrawn(id, "too many withdrawals wait for the server");
    std::uint64_t seq = 0;  // the session's requests, oldest first
    for (int looked = 0; !js.stopping(); ++looked) {
      if (looked == kMaxWithdrawScan) return not_withdrawn(id, "not among the session's first 64 queued requests");
      std::string error;
      auto queued = queued_after(js, subject, seq, error);
      if (!queued && !error.empty()) return not_withdrawn(id, error);
      if (!queued) {
        log::info("request_not_withdrawn", {{"message_id", id}, {"reason", "not in the work queue"}});
        return;
      }
      if (queued->id == id) return delete_queued(js, queued->seq, id);
      seq = queued->seq;
    }
  });
}

std::unique_ptr<Subscription> JetStreamWorkQueue::consume(FreeSlots free_slots, WorkHandler handler) {
  return std::make_unique<PullConsumer>(js_, std::move(free_slots), std::move(handler));
}

ComponentStatus JetStreamWorkQueue::status() const { return {"jetstream", false, js_.bus().connected() && js_.ready()}; }

}  // namespace chat::bus
