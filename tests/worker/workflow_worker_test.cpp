// WorkflowWorker on the in-process bus and registry: what comes out of the bus
// for a workflow request, where it goes, and how cancel, the concurrency bound,
// shutdown and replay behave.
//
// The io_context runs on the test thread (Loop::run_until / settle), so "nothing
// else happened" can be checked exactly: settle() returns once no handler is
// left to run. One test adds a helper thread to run generations in parallel.

#include "worker/workflow_worker.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bus/bus_work_queue.hpp"
#include "bus/chunk_log.hpp"
#include "bus/memory_bus.hpp"
#include "bus/subject_pattern.hpp"
#include "protocol/messages.hpp"
#include "protocol/subjects.hpp"
#include "registry/memory_registry.hpp"
#include "providers/demo_provider.hpp"

namespace chat::worker {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using protocol::ChunkType;
using protocol::ResponseChunk;
using protocol::WorkflowRequest;
using providers::Finish;
using providers::Generation;
using providers::GenerationSink;
using providers::Provider;

constexpr auto kDeadline = 10s;

// The test's io_context, run by the test thread and by `helper_threads` more.
class Loop {
 public:
  explicit Loop(unsigned helper_threads = 0) {
    for (unsigned i = 0; i < helper_threads; ++i) helpers_.emplace_back([this] { ioc_.run(); });
  }
  ~Loop() { stop(); }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  asio::any_io_executor executor() { return ioc_.get_executor(); }

  // Runs handlers until `done` holds; false if it did not within the deadline.
  template <class Done>
  bool run_until(Done done) {
    auto until = std::chrono::steady_clock::now() + kDeadline;
    while (!done()) {
      if (std::chrono::steady_clock::now() > until) return false;
      ioc_.run_one_for(5ms);
    }
    return true;
  }
  // Runs one handler that is ready; false if none was.
  bool run_one() { return ioc_.poll_one() > 0; }
  // Runs what is ready and what that posts, until nothing is left to run.
  // (Exact only without helper threads.)
  void settle() {
    while (ioc_.poll() > 0) {
    }
  }
  void stop() {
    work_.reset();
    ioc_.stop();
    for (auto& t : helpers_) t.join();
    helpers_.clear();
  }

 private:
  asio::io_context ioc_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(ioc_);
  std::vector<std::thread> helpers_;
};

// Everything published under chat.>, in arrival order (one subscription, so
// one publisher's messages keep their order).
class Tap {
 public:
  explicit Tap(bus::MessageBus& bus)
      : sub_(bus.subscribe("chat.>", {}, [this](const bus::Message& m) {
          std::lock_guard lock(mutex_);
          seen_.emplace_back(std::string(m.subject), std::string(m.payload));
        })) {}

  // The chunks that arrived on `subject` (of `message_id` when given).
  std::vector<ResponseChunk> chunks(const std::string& subject, const std::string& message_id = "") const {
    std::vector<ResponseChunk> out;
    std::lock_guard lock(mutex_);
    for (const auto& [s, payload] : seen_) {
      if (s != subject) continue;
      std::string error;
      auto c = protocol::decode_response_chunk(payload, error);
      if (!c) {
        ADD_FAILURE() << "not a chunk on " << s << ": " << error << ": " << payload;
        continue;
      }
      if (message_id.empty() || c->message_id == message_id) out.push_back(std::move(*c));
    }
    return out;
  }

  bool has_final(const std::string& subject, const std::string& message_id) const {
    auto all = chunks(subject, message_id);
    return std::any_of(all.begin(), all.end(), [](const ResponseChunk& c) { return c.is_final; });
  }

  // Every subject that carried a chunk (pod response or session broadcast).
  std::set<std::string> chunk_subjects() const {
    std::set<std::string> out;
    std::lock_guard lock(mutex_);
    for (const auto& [s, payload] : seen_)
      if (bus::subject_matches(subjects::kAllBroadcast, s) || bus::subject_matches("chat.pod.*.response", s))
        out.insert(s);
    return out;
  }

  std::size_t count(const std::string& subject) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::count_if(seen_.begin(), seen_.end(), [&](const auto& m) { return m.first == subject; }));
  }

 private:
  mutable std::mutex mutex_;  // guards seen_: the handler runs on a loop thread
  std::vector<std::pair<std::string, std::string>> seen_;
  std::unique_ptr<bus::Subscription> sub_;  // last member: unsubscribed before seen_ goes
};

// A chunk log that refuses every append while told to (the bus is down), holds
// its answers while told to (a slow server), and keeps what it took once.
class RefusingLog final : public bus::ChunkLog {
 public:
  explicit RefusingLog(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  void append(const std::string&, const std::string&, std::string entry_id, const std::vector<std::string>& payloads,
              bus::PublishCallback done) override {
    boost::system::error_code ec;
    std::lock_guard lock(mutex_);
    ++appends_;
    if (refusing_) ec = asio::error::not_connected;
    else if (ids_.insert(entry_id).second) entries_.push_back({std::move(entry_id), payloads});
    answer(append_answers_, [done = std::move(done), ec] {
      if (done) done(ec);
    });
  }
  // The reply's own chunks, as the log's subject per message gives them.
  void read(const std::string&, const std::string& message_id, bus::LogReadCallback done) override {
    std::lock_guard lock(mutex_);
    ++reads_;
    std::vector<std::string> payloads;
    std::string error;
    for (const auto& e : entries_)
      for (const auto& p : e.payloads)
        if (auto c = protocol::decode_response_chunk(p, error); c && c->message_id == message_id) payloads.push_back(p);
    boost::system::error_code ec;
    if (failing_reads_ > 0) {
      --failing_reads_;
      ec = asio::error::timed_out;
      payloads.clear();
    }
    answer(read_answers_, [done = std::move(done), ec, payloads = std::move(payloads)] { done(ec, payloads); });
  }
  ComponentStatus status() const override { return {"test", true, true}; }

  void refuse(bool refusing) {
    std::lock_guard lock(mutex_);
    refusing_ = refusing;
  }
  void hold() { set_holding(append_answers_, true); }
  // Answers the appends held so far and every later one at once.
  void release() { set_holding(append_answers_, false); }
  // Reads wait for release_reads() (a server slower than the queue's ack wait).
  void hold_reads() { set_holding(read_answers_, true); }
  void release_reads() { set_holding(read_answers_, false); }
  // The next `n` reads fail (a NATS node restarting).
  void fail_reads(std::size_t n) {
    std::lock_guard lock(mutex_);
    failing_reads_ = n;
  }
  std::size_t reads() const {
    std::lock_guard lock(mutex_);
    return reads_;
  }
  std::size_t appends() const {
    std::lock_guard lock(mutex_);
    return appends_;
  }
  // The id of each entry stored and how many chunks it holds, in append order.
  std::vector<std::pair<std::string, std::size_t>> entries() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<std::string, std::size_t>> out;
    for (const auto& e : entries_) out.emplace_back(e.id, e.payloads.size());
    return out;
  }
  std::vector<ResponseChunk> chunks() const {
    std::lock_guard lock(mutex_);
    std::vector<ResponseChunk> out;
    std::string error;
    for (const auto& e : entries_)
      for (const auto& p : e.payloads)
        if (auto c = protocol::decode_response_chunk(p, error)) out.push_back(std::move(*c));
    return out;
  }

 private:
  struct Entry {
    std::string id;
    std::vector<std::string> payloads;
  };
  // The answers of one kind of call: posted at once, or kept while held.
  struct Answers {
    bool holding = false;
    std::vector<std::function<void()>> held;
  };
  void answer(Answers& a, std::function<void()> f) {  // with mutex_ held
    if (a.holding) a.held.push_back(std::move(f));
    else asio::post(executor_, std::move(f));
  }
  void set_holding(Answers& a, bool holding) {
    std::lock_guard lock(mutex_);
    a.holding = holding;
    if (holding) return;
    for (auto& f : a.held) asio::post(executor_, std::move(f));
    a.held.clear();
  }

  asio::any_io_executor executor_;
  mutable std::mutex mutex_;  // guards the fields below: appends come from the run's strand, reads from the test
  bool refusing_ = false;
  Answers append_answers_;
  Answers read_answers_;
  std::size_t reads_ = 0;
  std::size_t failing_reads_ = 0;
  std::size_t appends_ = 0;
  std::set<std::string> ids_;
  std::vector<Entry> entries_;
};

// A work queue the test delivers from, each delivery with the attempt it says
// (as JetStream numbers them), each counting the worker's acks and keep-alives.
class ScriptedQueue final : public bus::WorkQueue {
 public:
  struct Delivery {
    unsigned attempt;
    bool final = false;  // the queue delivers it no more after this
    std::atomic<int> acks{0};
    std::atomic<int> keep_alives{0};
  };

  void submit(std::string, std::string, std::string, bus::Headers, bus::PublishCallback done) override {
    if (done) done(asio::error::operation_not_supported);
  }
  void withdraw(const std::string&, const std::string&) override {}
  std::unique_ptr<bus::Subscription> consume(bus::FreeSlots, bus::WorkHandler handler) override {
    handler_ = std::move(handler);
    return nullptr;
  }
  ComponentStatus status() const override { return {"test", true, true}; }

  std::shared_ptr<Delivery> deliver(const WorkflowRequest& r, unsigned attempt, bool final = false) {
    auto d = std::make_shared<Delivery>();
    d->attempt = attempt;
    d->final = final;
    handler_(std::make_unique<Item>(protocol::encode(r), subjects::execute(r.session_id), d));
    return d;
  }

 private:
  class Item final : public bus::WorkItem {
   public:
    Item(std::string payload, std::string subject, std::shared_ptr<Delivery> d)
        : payload_(std::move(payload)), subject_(std::move(subject)), delivery_(std::move(d)) {}
    std::string_view payload() const override { return payload_; }
    std::string_view subject() const override { return subject_; }
    std::string header(std::string_view) const override { return {}; }
    unsigned attempt() const override { return delivery_->attempt; }
    bool final_attempt() const override { return delivery_->final; }
    void in_progress() override { ++delivery_->keep_alives; }
    void ack() override { ++delivery_->acks; }
    void give_back() override {}

   private:
    std::string payload_, subject_;
    std::shared_ptr<Delivery> delivery_;
  };
  bus::WorkHandler handler_;
};

class ScriptedGeneration final : public Generation {
 public:
  ScriptedGeneration(WorkflowRequest request, std::shared_ptr<GenerationSink> sink)
      : request_(std::move(request)), sink_(std::move(sink)) {}

  void text(std::string_view t) {
    std::lock_guard lock(mutex_);
    if (sink_) sink_->on_text(t);
  }
  void finish(std::string reason = "stop") {
    std::lock_guard lock(mutex_);
    if (auto sink = std::exchange(sink_, nullptr)) sink->on_finish(Finish{std::move(reason), 7, {}});
  }
  void cancel() override {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
    if (auto sink = std::exchange(sink_, nullptr)) sink->on_finish(Finish{"cancelled", std::nullopt, {}});
  }
  // Lets go of the sink without a word (the provider is going away).
  void drop() {
    std::lock_guard lock(mutex_);
    sink_.reset();
  }

  const WorkflowRequest& request() const { return request_; }
  bool cancelled() const {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }
  bool ended() const {
    std::lock_guard lock(mutex_);
    return !sink_;
  }

 private:
  const WorkflowRequest request_;
  mutable std::mutex mutex_;  // guards sink_ and cancelled_: cancel comes from bus handlers
  std::shared_ptr<GenerationSink> sink_;
  bool cancelled_ = false;
};

class ScriptedProvider final : public Provider {
 public:
  ~ScriptedProvider() override {
    for (auto& g : generations_) g->drop();  // a generation left open would keep its run alive
  }
  std::string_view name() const override { return "scripted"; }
  std::string default_model() const override { return "scripted-1"; }
  std::shared_ptr<Generation> start(const WorkflowRequest& request, std::string, std::shared_ptr<GenerationSink> sink,
                                    providers::TraceHeaders trace = {}) override {
    auto g = std::make_shared<ScriptedGeneration>(request, std::move(sink));
    std::lock_guard lock(mutex_);
    generations_.push_back(g);
    trace_[request.message_id] = std::move(trace);
    return g;
  }
  // The trace headers a generation was started with.
  providers::TraceHeaders trace_headers(const std::string& message_id) const {
    std::lock_guard lock(mutex_);
    auto it = trace_.find(message_id);
    return it == trace_.end() ? providers::TraceHeaders{} : it->second;
  }

  std::size_t started() const {
    std::lock_guard lock(mutex_);
    return generations_.size();
  }
  // The generations started so far, in start order.
  std::vector<std::shared_ptr<ScriptedGeneration>> generations() const {
    std::lock_guard lock(mutex_);
    return generations_;
  }
  std::shared_ptr<ScriptedGeneration> generation(const std::string& message_id) const {
    std::lock_guard lock(mutex_);
    for (const auto& g : generations_)
      if (g->request().message_id == message_id) return g;
    return nullptr;
  }
  std::size_t running() const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::count_if(generations_.begin(), generations_.end(), [](const auto& g) { return !g->ended(); }));
  }

 private:
  mutable std::mutex mutex_;  // guards generations_ and trace_
  std::vector<std::shared_ptr<ScriptedGeneration>> generations_;
  std::map<std::string, providers::TraceHeaders> trace_;
};

config::WorkerConfig worker_config(std::size_t max_concurrent = 1'000) {
  config::WorkerConfig c;
  c.default_provider = "demo";
  c.max_concurrent = max_concurrent;
  return c;
}

// A worker on an in-process bus and registry, with the `scripted` provider and
// the `demo` provider (no pause between chunks).
struct Rig {
  explicit Rig(config::WorkerConfig config = worker_config(), unsigned helper_threads = 0, bool with_log = false,
               trace::Tracer tracer = {})
      : loop(helper_threads),
        worker(loop.executor(), bus, queue, with_log ? &log : nullptr, registry, std::move(config),
               {scripted, std::make_shared<providers::DemoProvider>(loop.executor(), providers::DemoOptions{0ms, 3})},
               tracer) {
    worker.start();
  }
  ~Rig() { loop.stop(); }  // no handler may run while the members below go away

  Loop loop;
  bus::MemoryBus bus{loop.executor()};
  bus::BusWorkQueue queue{bus};
  registry::MemoryRegistry registry{loop.executor()};
  Tap tap{bus};
  std::shared_ptr<ScriptedProvider> scripted = std::make_shared<ScriptedProvider>();
  RefusingLog log{loop.executor()};  // the worker's chunk log when the rig has one
  WorkflowWorker worker;
};

// A worker that takes its requests from a ScriptedQueue, with a chunk log.
struct RedeliveryRig {
  explicit RedeliveryRig(std::size_t max_concurrent = 1'000, std::chrono::milliseconds progress_interval = 20ms)
      : worker(loop.executor(), bus, queue, &log, registry, [max_concurrent, progress_interval] {
          auto c = worker_config(max_concurrent);
          c.progress_interval = progress_interval;
          return c;
        }(),
               {scripted}, {}) {
    worker.start();
  }
  ~RedeliveryRig() { loop.stop(); }

  Loop loop;
  bus::MemoryBus bus{loop.executor()};
  ScriptedQueue queue;
  registry::MemoryRegistry registry{loop.executor()};
  Tap tap{bus};
  std::shared_ptr<ScriptedProvider> scripted = std::make_shared<ScriptedProvider>();
  RefusingLog log{loop.executor()};
  WorkflowWorker worker;
};

WorkflowRequest request(const std::string& message_id, const std::string& provider = "scripted") {
  WorkflowRequest r;
  r.message_id = message_id;
  r.session_id = "s1";
  r.user_id = "owner";
  r.message = "Hello there";
  r.context.ai_provider = provider;
  r.timestamp = "2025-01-01T00:00:00Z";
  r.correlation_id = "corr-" + message_id;
  return r;
}

void submit(Rig& rig, const WorkflowRequest& r) {
  rig.bus.publish(subjects::execute(r.session_id), protocol::encode(r));
}

// A figure of the worker's own metrics (0 when it has none yet).
double metric(const WorkflowWorker& worker, std::string_view name) {
  metrics::Exposition out;
  worker.collect(out);
  auto text = out.text();
  auto key = "\n" + std::string(name) + " ";
  auto at = text.find(key);
  return at == std::string::npos ? 0.0 : std::stod(text.substr(at + key.size()));
}

// Waits until `n` generations published their final chunk, then lets every
// delivery that is still under way arrive.
bool complete(Rig& rig, std::uint64_t n) {
  bool done = rig.loop.run_until([&] { return rig.worker.completed() >= n; });
  rig.loop.settle();
  return done;
}

void connect(Rig& rig, const std::string& session, const std::string& pod, const std::string& connection) {
  rig.registry.add(registry::ConnectionRef{session, pod, connection});
}

std::vector<std::uint32_t> ids(const std::vector<ResponseChunk>& chunks) {
  std::vector<std::uint32_t> out;
  for (const auto& c : chunks) out.push_back(c.chunk_id);
  return out;
}

std::vector<std::uint32_t> zero_to(std::size_t n) {
  std::vector<std::uint32_t> out;
  for (std::uint32_t i = 0; i < n; ++i) out.push_back(i);
  return out;
}

std::string text(const std::vector<ResponseChunk>& chunks) {
  std::string out;
  for (const auto& c : chunks) out += c.chunk;
  return out;
}

std::string status_of(const std::string& reply) {
  boost::system::error_code ec;
  auto v = boost::json::parse(reply, ec);
  if (ec || !v.is_object() || !v.as_object().contains("status") || !v.as_object().at("status").is_string()) return {};
  return std::string(v.as_object().at("status").as_string());
}

// Sends a cancel request as `user` and waits for the worker's answer.
std::optional<std::string> cancel(Rig& rig, const std::string& message_id, const std::string& user,
                                  std::chrono::milliseconds timeout = kDeadline) {
  auto reply = std::make_shared<std::optional<std::string>>();
  rig.bus.request(subjects::cancel(message_id), protocol::encode(protocol::CancelRequest{message_id, "s1", user}), timeout,
                  [reply](boost::system::error_code ec, std::string r) { *reply = ec ? "error: " + ec.message() : r; });
  rig.loop.run_until([&] { return reply->has_value(); });
  return *reply;
}

const std::string kBroadcast = subjects::broadcast("s1");

// --- the reply -------------------------------------------------------------

TEST(WorkflowWorker, ARequestIsAnsweredWithChunksNumberedFromZeroInOrder) {
  Rig rig;
  auto r = request("m1", "demo");
  submit(rig, r);
  ASSERT_TRUE(complete(rig, 1));

  auto chunks = rig.tap.chunks(kBroadcast);
  ASSERT_GT(chunks.size(), 2u);
  EXPECT_EQ(ids(chunks), zero_to(chunks.size()));
  EXPECT_EQ(text(chunks), providers::DemoProvider::reply_for(r));
}

TEST(WorkflowWorker, OnlyTheLastChunkIsFinalAndItSaysHowTheReplyEnded) {
  Rig rig;
  submit(rig, request("m1", "demo"));
  ASSERT_TRUE(complete(rig, 1));

  auto chunks = rig.tap.chunks(kBroadcast);
  ASSERT_FALSE(chunks.empty());
  for (std::size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_FALSE(chunks[i].is_final) << "chunk " << i;
  const auto& last = chunks.back();
  EXPECT_TRUE(last.is_final);
  EXPECT_EQ(last.chunk_type, ChunkType::metadata);
  ASSERT_TRUE(last.metadata);
  EXPECT_EQ(last.metadata->finish_reason, "stop");
  EXPECT_EQ(last.metadata->model, "demo-1");
  EXPECT_TRUE(last.metadata->tokens_used);
}

TEST(WorkflowWorker, EveryChunkCarriesTheRequestsSessionMessageAndCorrelationIds) {
  Rig rig;
  submit(rig, request("m1", "demo"));
  ASSERT_TRUE(complete(rig, 1));

  auto chunks = rig.tap.chunks(kBroadcast);
  ASSERT_FALSE(chunks.empty());
  for (const auto& c : chunks) {
    EXPECT_EQ(c.session_id, "s1");
    EXPECT_EQ(c.message_id, "m1");
    EXPECT_EQ(c.correlation_id, "corr-m1");
    EXPECT_FALSE(c.timestamp.empty());
  }
}

TEST(WorkflowWorker, ConcurrentRepliesOnSeveralThreadsEachArriveInOrder) {
  Rig rig(worker_config(), /*helper_threads=*/1);
  constexpr int kReplies = 8;
  for (int i = 0; i < kReplies; ++i) submit(rig, request("m" + std::to_string(i), "demo"));
  ASSERT_TRUE(rig.loop.run_until([&] {
    if (rig.worker.completed() < std::uint64_t{kReplies}) return false;  // cheap, before decoding
    for (int i = 0; i < kReplies; ++i)
      if (!rig.tap.has_final(kBroadcast, "m" + std::to_string(i))) return false;
    return true;
  }));

  for (int i = 0; i < kReplies; ++i) {
    auto chunks = rig.tap.chunks(kBroadcast, "m" + std::to_string(i));
    EXPECT_EQ(ids(chunks), zero_to(chunks.size())) << "m" << i;
    EXPECT_EQ(std::count_if(chunks.begin(), chunks.end(), [](const auto& c) { return c.is_final; }), 1) << "m" << i;
  }
}

// A request sent twice at once (a pod sends a publish again when it timed
// out) may be admitted on two threads together: it runs once, the later
// delivery taken over by the earlier.
TEST(WorkflowWorker, TheSameRequestAdmittedOnTwoThreadsAtOnceRunsOnce) {
  Rig rig(worker_config(/*max_concurrent=*/1'000), /*helper_threads=*/3);
  constexpr std::size_t kRequests = 500;
  for (std::size_t i = 0; i < kRequests; ++i) {
    auto r = request("m" + std::to_string(i));
    submit(rig, r);
    submit(rig, r);
  }
  auto taken_over = [&] { return metric(rig.worker, "chat_worker_redeliveries_kept_running_total"); };
  // Every delivery accounted for: each request started, or taken over by its twin.
  EXPECT_TRUE(rig.loop.run_until([&] {
    return (taken_over() == kRequests && rig.scripted->started() == kRequests) || rig.scripted->started() > kRequests;
  }));
  EXPECT_EQ(rig.scripted->started(), kRequests) << "a request ran twice";
}

TEST(WorkflowWorker, AnUnknownProviderEndsTheReplyWithOneFinalErrorChunk) {
  Rig rig;
  submit(rig, request("m1", "no-such-provider"));
  ASSERT_TRUE(complete(rig, 1));

  auto chunks = rig.tap.chunks(kBroadcast);
  ASSERT_EQ(chunks.size(), 1u);
  const auto& c = chunks.front();
  EXPECT_EQ(c.chunk_id, 0u);
  EXPECT_TRUE(c.is_final);
  EXPECT_EQ(c.chunk_type, ChunkType::error);
  ASSERT_TRUE(c.error);
  EXPECT_EQ(c.error->code, "unknown_provider");
  ASSERT_TRUE(c.metadata);
  EXPECT_EQ(c.metadata->finish_reason, "error");
  EXPECT_EQ(c.metadata->tokens_used, 0) << "the contract's final chunk says how many tokens (none here)";
  EXPECT_EQ(rig.worker.active(), 0u);
}

// --- routing ---------------------------------------------------------------

TEST(WorkflowWorker, WithoutRegistryEntriesTheChunksGoToTheSessionBroadcast) {
  Rig rig;
  submit(rig, request("m1", "demo"));
  ASSERT_TRUE(complete(rig, 1));

  EXPECT_EQ(rig.tap.chunk_subjects(), (std::set<std::string>{kBroadcast}));
  EXPECT_TRUE(rig.tap.has_final(kBroadcast, "m1"));
}

TEST(WorkflowWorker, WithRegistryEntriesEachLivePodGetsEveryChunkAndTheBroadcastNone) {
  Rig rig;
  connect(rig, "s1", "pod-a", "c1");
  connect(rig, "s1", "pod-a", "c2");  // two streams on one pod: the pod still gets each chunk once
  connect(rig, "s1", "pod-b", "c3");
  submit(rig, request("m1", "demo"));
  ASSERT_TRUE(complete(rig, 1));

  auto pod_a = rig.tap.chunks(subjects::pod_response("pod-a"));
  auto pod_b = rig.tap.chunks(subjects::pod_response("pod-b"));
  ASSERT_FALSE(pod_a.empty());
  EXPECT_EQ(ids(pod_a), zero_to(pod_a.size()));
  EXPECT_TRUE(pod_a.back().is_final);
  EXPECT_EQ(ids(pod_b), ids(pod_a));
  EXPECT_EQ(rig.tap.chunk_subjects(),
            (std::set<std::string>{subjects::pod_response("pod-a"), subjects::pod_response("pod-b")}));
}

TEST(WorkflowWorker, TheAcceptingPodGetsEveryChunkWhenTheRouteNamesOtherPods) {
  Rig rig;
  connect(rig, "s1", "pod-a", "c1");
  auto r = request("m1", "demo");
  r.accepting_pod = "pod-z";
  submit(rig, r);
  ASSERT_TRUE(complete(rig, 1));

  auto accepting = rig.tap.chunks(subjects::pod_response("pod-z"));
  ASSERT_FALSE(accepting.empty());
  EXPECT_EQ(ids(accepting), zero_to(accepting.size()));
  EXPECT_TRUE(accepting.back().is_final);
  EXPECT_EQ(ids(rig.tap.chunks(subjects::pod_response("pod-a"))), ids(accepting));
  EXPECT_EQ(rig.tap.chunk_subjects(),
            (std::set<std::string>{subjects::pod_response("pod-a"), subjects::pod_response("pod-z")}));
}

TEST(WorkflowWorker, TheAcceptingPodGetsEachChunkOnceWhenItIsOnTheRoute) {
  Rig rig;
  connect(rig, "s1", "pod-a", "c1");
  connect(rig, "s1", "pod-b", "c2");
  auto r = request("m1", "demo");
  r.accepting_pod = "pod-a";
  submit(rig, r);
  ASSERT_TRUE(complete(rig, 1));

  auto accepting = rig.tap.chunks(subjects::pod_response("pod-a"));
  ASSERT_FALSE(accepting.empty());
  EXPECT_EQ(ids(accepting), zero_to(accepting.size()));
  EXPECT_EQ(ids(rig.tap.chunks(subjects::pod_response("pod-b"))), ids(accepting));
}

TEST(WorkflowWorker, TheAcceptingPodGetsNothingBesidesABroadcast) {
  Rig rig;
  auto r = request("m1", "demo");
  r.accepting_pod = "pod-z";
  submit(rig, r);
  ASSERT_TRUE(complete(rig, 1));

  EXPECT_TRUE(rig.tap.has_final(kBroadcast, "m1"));
  EXPECT_EQ(rig.tap.chunk_subjects(), (std::set<std::string>{kBroadcast}));
}

// --- cancel ----------------------------------------------------------------

TEST(WorkflowWorker, ACancelFromTheOwnerStopsTheGenerationAsCancelled) {
  Rig rig;
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto generation = rig.scripted->generation("m1");
  generation->text("Once upon ");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.count(kBroadcast) == 1; }));

  EXPECT_EQ(status_of(cancel(rig, "m1", "owner").value_or("")), "cancelling");
  ASSERT_TRUE(complete(rig, 1));

  EXPECT_TRUE(generation->cancelled());
  auto chunks = rig.tap.chunks(kBroadcast);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_TRUE(chunks.back().is_final);
  ASSERT_TRUE(chunks.back().metadata);
  EXPECT_EQ(chunks.back().metadata->finish_reason, "cancelled");
}

TEST(WorkflowWorker, ACancelFromAnotherUserIsForbiddenAndTheGenerationGoesOn) {
  Rig rig;
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto generation = rig.scripted->generation("m1");

  EXPECT_EQ(status_of(cancel(rig, "m1", "intruder").value_or("")), "forbidden");
  rig.loop.settle();
  EXPECT_FALSE(generation->cancelled());

  generation->text("still ");
  generation->text("here");
  generation->finish();
  ASSERT_TRUE(complete(rig, 1));
  auto chunks = rig.tap.chunks(kBroadcast);
  EXPECT_EQ(text(chunks), "still here");
  ASSERT_FALSE(chunks.empty());
  ASSERT_TRUE(chunks.back().metadata);
  EXPECT_EQ(chunks.back().metadata->finish_reason, "stop");
}

TEST(WorkflowWorker, ACancelSentAgainAfterTheReplyEndedGetsTheFirstAnswer) {
  Rig rig;
  submit(rig, request("m1"));
  submit(rig, request("m2"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  EXPECT_EQ(status_of(cancel(rig, "m1", "owner").value_or("")), "cancelling");
  rig.scripted->generation("m2")->finish();
  ASSERT_TRUE(complete(rig, 2));

  // A client retrying a cancel whose answer it lost is told the same, not "nothing runs".
  EXPECT_EQ(status_of(cancel(rig, "m1", "owner").value_or("")), "cancelling");
  EXPECT_EQ(status_of(cancel(rig, "m1", "intruder").value_or("")), "forbidden");
  // A reply that ended by itself was never cancelled: silence, as for any reply nobody runs.
  EXPECT_EQ(cancel(rig, "m2", "owner", 500ms).value_or(""), "error: " + make_error_code(boost::asio::error::timed_out).message());
}

TEST(WorkflowWorker, TheSameRequestSentTwiceRunsOnce) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  submit(rig, request("m1"));
  submit(rig, request("m1"));  // while it runs
  submit(rig, request("m2"));
  submit(rig, request("m2"));  // while it waits for the slot
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  rig.loop.settle();
  rig.scripted->generation("m1")->text("once");
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  rig.scripted->generation("m2")->finish();
  ASSERT_TRUE(complete(rig, 2));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 2u);
  EXPECT_EQ(text(rig.tap.chunks(kBroadcast, "m1")), "once");
  EXPECT_EQ(rig.worker.active(), 0u);
}

// chat-worker destroys the worker when its drain runs out of time; a log read
// still out answers later, on the log's own thread.
TEST(WorkflowWorker, ALogReadThatAnswersAfterTheWorkerIsGoneTouchesNothingOfIt) {
  Loop loop;
  bus::MemoryBus bus{loop.executor()};
  ScriptedQueue queue;
  registry::MemoryRegistry registry{loop.executor()};
  auto scripted = std::make_shared<ScriptedProvider>();
  RefusingLog log{loop.executor()};
  auto worker = std::make_unique<WorkflowWorker>(loop.executor(), bus, queue, &log, registry, worker_config(),
                                                 std::vector<std::shared_ptr<providers::Provider>>{scripted});
  worker->start();
  log.hold_reads();
  auto delivery = queue.deliver(request("m1"), 2);  // its earlier attempt is looked for in the log
  ASSERT_TRUE(loop.run_until([&] { return log.reads() == 1; }));
  worker.reset();
  log.release_reads();
  loop.settle();  // before the fix: the answer reached the freed worker (ASan: heap-use-after-free)
  EXPECT_EQ(scripted->started(), 0u);
  EXPECT_EQ(delivery->acks.load(), 0) << "not acked: the queue delivers it again to a worker that is up";
}

TEST(WorkflowWorker, ADeliveryAgainWhileTheLogIsReadForTheLastOneTakesItsPlaceInsteadOfRunningTwice) {
  RedeliveryRig rig;
  rig.log.hold_reads();  // slower than the queue's ack wait
  auto second = rig.queue.deliver(request("m1"), 2);  // the worker that had it died
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.log.reads() == 1; }));
  ASSERT_TRUE(rig.loop.run_until([&] { return second->keep_alives.load() > 0; }))
      << "held while its earlier attempt is looked for: not a dead worker's request";
  auto third = rig.queue.deliver(request("m1"), 3);  // the queue gave up waiting anyway
  rig.loop.settle();
  rig.log.release_reads();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() >= 1; }));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 1u) << "one generation, not one per delivery";
  rig.scripted->generation("m1")->text("once");
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.worker.completed() >= 1; }));
  rig.loop.settle();
  EXPECT_EQ(third->acks.load(), 1) << "the newest delivery is the one the queue waits for";
  EXPECT_EQ(rig.worker.active(), 0u);
  auto chunks = rig.tap.chunks(kBroadcast, "m1");
  ASSERT_FALSE(chunks.empty());
  for (const auto& c : chunks) EXPECT_EQ(c.attempt, 3u);
}

// An earlier delivery that comes while a later one is looked for in the log
// (its own read ended a moment before the later one began) leaves the later
// one in place: that is the delivery the queue waits for.
TEST(WorkflowWorker, AnEarlierDeliveryWhileALaterOneIsReadForLeavesTheLaterOneInPlace) {
  RedeliveryRig rig;
  rig.log.hold_reads();
  auto third = rig.queue.deliver(request("m1"), 3);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.log.reads() == 1; }));
  auto second = rig.queue.deliver(request("m1"), 2);
  rig.loop.settle();
  rig.log.release_reads();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() >= 1; }));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 1u) << "one generation, not one per delivery";
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.worker.completed() >= 1; }));
  rig.loop.settle();
  EXPECT_EQ(third->acks.load(), 1) << "the later delivery is the one the queue waits for";
  EXPECT_EQ(second->acks.load(), 0);
  auto chunks = rig.tap.chunks(kBroadcast, "m1");
  ASSERT_FALSE(chunks.empty());
  for (const auto& c : chunks) EXPECT_EQ(c.attempt, 3u);
}

// finished() passes the slot to a waiting request in one handler and the
// request begins in the next: a delivery of it again admitted between the two
// once found it neither waiting nor running, waited for the slot it had itself,
// and ran the reply a second time after the first.
TEST(WorkflowWorker, ADeliveryAgainAsTheRequestIsPassedASlotTakesItsPlaceInsteadOfRunningTwice) {
  RedeliveryRig rig(/*max_concurrent=*/1, /*progress_interval=*/1h);  // no keep-alive handler in the steps below
  rig.queue.deliver(request("m1"), 1);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  rig.queue.deliver(request("m2"), 1);
  rig.loop.settle();
  ASSERT_EQ(rig.scripted->started(), 1u) << "m2 waits for m1's slot";
  rig.log.hold();
  rig.scripted->generation("m1")->finish();
  rig.loop.settle();  // m1's final chunk waits for the log
  rig.log.release();
  ASSERT_TRUE(rig.loop.run_one());  // the log's answer: m1's end is next, on its strand
  auto second = rig.queue.deliver(request("m2"), 2);  // admitted right after that end
  rig.loop.settle();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  rig.scripted->generation("m2")->text("once");
  rig.scripted->generation("m2")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.worker.completed() >= 2; }));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 2u) << "m2 ran again after its first run";
  EXPECT_EQ(second->acks.load(), 1) << "the newest delivery is the one the queue waits for";
  EXPECT_EQ(rig.worker.active(), 0u);
  auto chunks = rig.tap.chunks(kBroadcast, "m2");
  ASSERT_FALSE(chunks.empty());
  for (const auto& c : chunks) EXPECT_EQ(c.attempt, 2u);
  EXPECT_EQ(text(chunks), "once");
}

// m1 runs in the only slot and m2 waits; m1 ends. Returns with finished()
// about to pass m1's slot to m2: the next handler is m1's end, which posts
// m2's run(), so whatever is posted now comes in between.
std::shared_ptr<ScriptedQueue::Delivery> pass_m1s_slot_to_m2(RedeliveryRig& rig, bool m2_final) {
  rig.queue.deliver(request("m1"), 1);
  EXPECT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto m2 = rig.queue.deliver(request("m2"), 1, m2_final);
  rig.loop.settle();
  rig.log.hold();
  rig.scripted->generation("m1")->finish();
  rig.loop.settle();  // m1's final chunk waits for the log
  rig.log.release();
  EXPECT_TRUE(rig.loop.run_one());  // the log's answer
  return m2;
}

// The reply's only chunk is its end, cancelled: it never started.
testing::AssertionResult ended_cancelled_unstarted(const Tap& tap, const std::string& message_id) {
  auto chunks = tap.chunks(kBroadcast, message_id);
  if (chunks.size() != 1) return testing::AssertionFailure() << message_id << ": " << chunks.size() << " chunks";
  if (!chunks[0].metadata) return testing::AssertionFailure() << message_id << ": no end";
  if (chunks[0].metadata->finish_reason != "cancelled")
    return testing::AssertionFailure() << message_id << " ended " << chunks[0].metadata->finish_reason;
  return testing::AssertionSuccess();
}

// finished() passed m1's slot to m2 and posted its run(): m2 is then in no
// queue and no run. A cancel in between is answered by the worker that holds
// m2 (silence was taken for "not here"), and m2 never reaches the provider.
TEST(WorkflowWorker, ACancelOfARequestOnItsWayToThePassedSlotIsAnsweredAndItNeverRuns) {
  RedeliveryRig rig(/*max_concurrent=*/1, /*progress_interval=*/1h);
  auto m2 = pass_m1s_slot_to_m2(rig, /*m2_final=*/false);
  auto answer = std::make_shared<std::optional<std::string>>();
  rig.bus.request(subjects::cancel("m2"), protocol::encode(protocol::CancelRequest{"m2", "s1", "owner"}), 2s,
                  [answer](boost::system::error_code ec, std::string r) { *answer = ec ? "error" : r; });
  ASSERT_TRUE(rig.loop.run_until([&] { return answer->has_value(); }));
  EXPECT_EQ(status_of(**answer), "cancelling");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m2"); }));
  rig.loop.settle();
  EXPECT_TRUE(ended_cancelled_unstarted(rig.tap, "m2"));
  EXPECT_EQ(rig.scripted->started(), 1u) << "m2 reached the provider";
  EXPECT_EQ(m2->acks.load(), 1);
  EXPECT_EQ(rig.worker.active(), 0u);
}

// A finished reply whose ack the queue never heard is delivered again; the
// log holds its end, but the first reads of it fail.
TEST(WorkflowWorker, ADeliveryAgainWhoseLogReadFailsReadsAgainInsteadOfRunningTheReplyTwice) {
  RedeliveryRig rig;
  rig.queue.deliver(request("m1"), 1);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  rig.scripted->generation("m1")->text("once");
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.worker.completed() == 1; }));
  rig.loop.settle();
  rig.log.fail_reads(2);
  auto again = rig.queue.deliver(request("m1"), 2);
  ASSERT_TRUE(rig.loop.run_until([&] { return again->acks.load() == 1; })) << "never found finished";
  rig.loop.settle();
  EXPECT_EQ(rig.log.reads(), 3u);
  EXPECT_EQ(rig.scripted->started(), 1u) << "the reply was generated again";
  EXPECT_GT(again->keep_alives.load(), 0) << "held between the reads: not a dead worker's request";
  EXPECT_EQ(rig.worker.active(), 0u);
}

// A log that stays away does not hold the request for good: it runs.
TEST(WorkflowWorker, ADeliveryAgainWhoseLogReadsKeepFailingRunsAfterAFewReads) {
  RedeliveryRig rig;
  rig.log.fail_reads(100);
  rig.queue.deliver(request("m1"), 2);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  EXPECT_EQ(rig.log.reads(), 5u) << "250 ms, 0.5 s, 1 s and 2 s apart";
}

// Its last delivery is not tried once more, also when it had to wait for a
// slot: a worker stopped or lost during that run would leave it with no end.
TEST(WorkflowWorker, ALastDeliveryThatWaitedForASlotEndsAsRetriesExhaustedWithoutRunning) {
  RedeliveryRig rig(/*max_concurrent=*/1);
  rig.queue.deliver(request("m1"), 1);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto last = rig.queue.deliver(request("m2"), 4, /*final=*/true);
  rig.loop.settle();
  EXPECT_FALSE(rig.tap.has_final(kBroadcast, "m2")) << "it waits for the slot";
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m2"); }));
  auto chunks = rig.tap.chunks(kBroadcast, "m2");
  ASSERT_EQ(chunks.size(), 1u);
  ASSERT_TRUE(chunks[0].error);
  EXPECT_EQ(chunks[0].error->code, "retries_exhausted");
  EXPECT_EQ(rig.scripted->started(), 1u) << "m2 never reached the provider";
  ASSERT_TRUE(rig.loop.run_until([&] { return last->acks.load() == 1; }));
}

TEST(WorkflowWorker, ARequestItsOwnerCancelledBeforeItCameEndsCancelledWithoutRunning) {
  Rig rig;
  // A pod gave up on a reply still in the work queue; and someone else's cancel of another.
  rig.bus.publish(subjects::cancel("m9"), protocol::encode(protocol::CancelRequest{"m9", "s1", "owner"}));
  rig.bus.publish(subjects::cancel("m10"), protocol::encode(protocol::CancelRequest{"m10", "s1", "intruder"}));
  rig.loop.settle();
  submit(rig, request("m9"));
  submit(rig, request("m10"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->generation("m10") != nullptr; }))
      << "another user's cancel stops nothing";
  rig.scripted->generation("m10")->finish();
  ASSERT_TRUE(complete(rig, 2));
  EXPECT_EQ(rig.scripted->generation("m9"), nullptr) << "the provider was never asked";
  auto m9 = rig.tap.chunks(kBroadcast, "m9");
  ASSERT_EQ(m9.size(), 1u);
  EXPECT_TRUE(m9[0].is_final);
  ASSERT_TRUE(m9[0].metadata);
  EXPECT_EQ(m9[0].metadata->finish_reason, "cancelled");
  EXPECT_EQ(status_of(*cancel(rig, "m9", "owner")), "cancelling") << "a cancel sent again gets the same answer";
  EXPECT_EQ(rig.worker.active(), 0u);
}

TEST(WorkflowWorker, ACancelWhileTheLogIsReadForAnEarlierAttemptEndsItWithoutRunning) {
  RedeliveryRig rig;
  rig.log.hold_reads();
  auto delivery = rig.queue.deliver(request("m1"), 2);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.log.reads() == 1; }));
  auto answer = std::make_shared<std::optional<std::string>>();
  rig.bus.request(subjects::cancel("m1"), protocol::encode(protocol::CancelRequest{"m1", "s1", "owner"}), kDeadline,
                  [answer](boost::system::error_code ec, std::string r) { *answer = ec ? "error" : r; });
  ASSERT_TRUE(rig.loop.run_until([&] { return answer->has_value(); }));
  EXPECT_EQ(status_of(**answer), "cancelling");
  rig.log.release_reads();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.worker.completed() >= 1; }));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 0u);
  EXPECT_EQ(delivery->acks.load(), 1);
  EXPECT_TRUE(ended_cancelled_unstarted(rig.tap, "m1"));
}

TEST(WorkflowWorker, AProviderNulIsLeftOutOfTheChunks) {
  Rig rig;
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  rig.scripted->generation("m1")->text(std::string("a\0b", 3));
  rig.scripted->generation("m1")->text(std::string(1, '\0'));
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(complete(rig, 1));
  auto chunks = rig.tap.chunks(kBroadcast, "m1");
  EXPECT_EQ(text(chunks), "ab");
  EXPECT_EQ(chunks.size(), 2u) << "a chunk of nothing but NUL was sent";
}

// --- the concurrency bound ---------------------------------------------------

TEST(WorkflowWorker, RequestsBeyondMaxConcurrentWaitForASlotAndAllComplete) {
  Rig rig(worker_config(/*max_concurrent=*/2));
  constexpr std::size_t kRequests = 5;
  for (std::size_t i = 0; i < kRequests; ++i) submit(rig, request("m" + std::to_string(i)));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 2u);
  EXPECT_EQ(rig.worker.active(), 2u);

  // Each finished generation hands its slot to the next waiting request.
  for (std::size_t i = 0; i < kRequests; ++i) {
    ASSERT_LT(i, rig.scripted->started()) << "request " << i << " never started";
    rig.scripted->generations()[i]->finish();
    rig.loop.settle();
    EXPECT_LE(rig.scripted->running(), 2u);
  }

  EXPECT_EQ(rig.scripted->started(), kRequests);
  EXPECT_EQ(rig.worker.completed(), kRequests);
  EXPECT_EQ(rig.worker.active(), 0u);
  for (std::size_t i = 0; i < kRequests; ++i) {
    auto chunks = rig.tap.chunks(kBroadcast, "m" + std::to_string(i));
    ASSERT_EQ(chunks.size(), 1u) << "m" << i;
    ASSERT_TRUE(chunks.front().metadata);
    EXPECT_EQ(chunks.front().metadata->finish_reason, "stop") << "m" << i;
  }
}

// --- shutdown ----------------------------------------------------------------

// Shutdown ran out of time on a bus that never delivers again (core NATS, the
// in-process bus): the running reply and the one waiting for its slot both
// end, cancelled, the waiting one without starting; then the worker is idle.
TEST(WorkflowWorker, CancelRunningEndsTheRunningAndTheWaitingReplies) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  submit(rig, request("m1"));
  submit(rig, request("m2"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  rig.loop.settle();
  int idle = 0;
  rig.worker.stop_intake([&] { ++idle; });
  rig.worker.cancel_running([&] { ++idle; });
  ASSERT_TRUE(rig.loop.run_until([&] { return idle == 1; }));
  rig.loop.settle();
  EXPECT_EQ(idle, 1);
  EXPECT_EQ(rig.scripted->started(), 1u) << "m2 never reached the provider";
  for (const char* id : {"m1", "m2"}) {
    ASSERT_TRUE(rig.tap.has_final(kBroadcast, id)) << id;
    auto chunks = rig.tap.chunks(kBroadcast, id);
    ASSERT_TRUE(chunks.back().metadata) << id;
    EXPECT_EQ(chunks.back().metadata->finish_reason, "cancelled") << id;
  }
  EXPECT_EQ(rig.worker.active(), 0u);
}

// The runs cancel_running() ends finish on other threads while it still ends
// the waiting requests one by one: the drain is over only when the last of
// those has ended too (chat-worker stops its event loop then).
TEST(WorkflowWorker, CancelRunningCallsOnIdleOnlyOnceEveryWaitingReplyEnded) {
  constexpr std::size_t kSlots = 20, kWaiting = 200;
  Rig rig(worker_config(kSlots), /*helper_threads=*/3);
  for (std::size_t i = 0; i < kSlots + kWaiting; ++i) submit(rig, request("m" + std::to_string(i)));
  ASSERT_TRUE(rig.loop.run_until([&] {
    return rig.scripted->started() == kSlots && metric(rig.worker, "chat_worker_queue_depth") == kWaiting;
  }));
  std::atomic<std::uint64_t> completed_at_idle{0};
  std::atomic<int> idle{0};
  asio::post(rig.loop.executor(), [&] {
    rig.worker.cancel_running([&] {
      completed_at_idle = rig.worker.completed();
      ++idle;
    });
  });
  ASSERT_TRUE(rig.loop.run_until([&] { return idle.load() == 1 && rig.worker.completed() == kSlots + kWaiting; }));
  EXPECT_EQ(completed_at_idle.load(), kSlots + kWaiting) << "on_idle ran before every reply ended";
  EXPECT_EQ(idle.load(), 1);
  EXPECT_EQ(rig.scripted->started(), kSlots);
}

// JetStream gives an unfinished request to another worker, but never after
// its last delivery: when a drain runs out of time, those end here, and the
// others are left running for the queue to deliver again.
TEST(WorkflowWorker, CancellingTheLastDeliveriesEndsOnlyThoseAndLeavesTheOthersToTheQueue) {
  RedeliveryRig rig(/*max_concurrent=*/2);
  auto only = rig.queue.deliver(request("m1"), 1, /*final=*/true);  // JS_MAX_DELIVER=1
  auto again = rig.queue.deliver(request("m2"), 1);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  auto waiting = rig.queue.deliver(request("m3"), 4, /*final=*/true);
  rig.loop.settle();
  int idle = 0;
  rig.worker.stop_intake([&] { ++idle; });
  rig.worker.cancel_running([&] { ++idle; }, WorkflowWorker::Ending::last_deliveries);
  for (const char* id : {"m1", "m3"}) {
    ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, id); })) << id;
    auto chunks = rig.tap.chunks(kBroadcast, id);
    ASSERT_TRUE(chunks.back().metadata) << id;
    EXPECT_EQ(chunks.back().metadata->finish_reason, "cancelled") << id;
  }
  ASSERT_TRUE(rig.loop.run_until([&] { return only->acks.load() == 1 && waiting->acks.load() == 1; }));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 2u) << "m3 never reached the provider";
  EXPECT_FALSE(rig.tap.has_final(kBroadcast, "m2")) << "another worker takes it over";
  EXPECT_EQ(again->acks.load(), 0);
  EXPECT_EQ(idle, 0) << "m2 still runs";
  rig.scripted->generation("m2")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return idle == 1; }));
}

// A run the drain left to the queue (not its last delivery then) that is
// handed its last delivery afterwards, by an admission already under way,
// ends too: no other worker will be given it.
TEST(WorkflowWorker, ARunHandedItsLastDeliveryAfterTheDrainEndedTheLastDeliveriesEndsToo) {
  RedeliveryRig rig;
  rig.queue.deliver(request("m1"), 1);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  rig.loop.settle();
  int idle = 0;
  rig.worker.stop_intake([&] { ++idle; });
  rig.worker.cancel_running([&] { ++idle; }, WorkflowWorker::Ending::last_deliveries);
  rig.loop.settle();
  ASSERT_FALSE(rig.tap.has_final(kBroadcast, "m1")) << "not its last delivery: left to the queue";
  auto last = rig.queue.deliver(request("m1"), 2, /*final=*/true);
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m1"); }));
  auto chunks = rig.tap.chunks(kBroadcast, "m1");
  ASSERT_TRUE(chunks.back().metadata);
  EXPECT_EQ(chunks.back().metadata->finish_reason, "cancelled");
  ASSERT_TRUE(rig.loop.run_until([&] { return last->acks.load() == 1; }));
  EXPECT_EQ(rig.scripted->started(), 1u);
}

// The same, for a request on its last delivery that a reply ending a moment
// before passed its slot to: on its way to run(), it is in no queue and not
// yet running, and it must end too instead of starting as the process exits.
TEST(WorkflowWorker, CancellingTheLastDeliveriesEndsOneOnItsWayToThePassedSlot) {
  RedeliveryRig rig(/*max_concurrent=*/1, /*progress_interval=*/1h);
  auto m2 = pass_m1s_slot_to_m2(rig, /*m2_final=*/true);  // JS_MAX_DELIVER=1
  int idle = 0;
  asio::post(rig.loop.executor(), [&] {
    ASSERT_EQ(rig.worker.active(), 1u) << "m1 ended and passed its slot on";
    rig.worker.stop_intake([&] { ++idle; });
    rig.worker.cancel_running([&] { ++idle; }, WorkflowWorker::Ending::last_deliveries);
  });
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m2"); }));
  ASSERT_TRUE(rig.loop.run_until([&] { return idle == 1; }));
  rig.loop.settle();
  EXPECT_TRUE(ended_cancelled_unstarted(rig.tap, "m2"));
  EXPECT_EQ(rig.scripted->started(), 1u) << "m2 reached the provider";
  EXPECT_EQ(m2->acks.load(), 1);
  EXPECT_EQ(rig.worker.active(), 0u);
}

TEST(WorkflowWorker, StopIntakeCallsOnIdleOnceDrainedWhenNothingRuns) {
  Rig rig;
  int idle = 0;
  rig.worker.stop_intake([&] { ++idle; });
  ASSERT_TRUE(rig.loop.run_until([&] { return idle == 1; }));
  rig.loop.settle();
  EXPECT_EQ(idle, 1);
}

// A queue group (the in-process bus, core NATS) delivers nothing twice: the
// requests it had already sent to a worker when its intake stopped run there.
TEST(WorkflowWorker, StopIntakeStillRunsTheRequestsTheQueueHadSentHere) {
  Rig rig;
  submit(rig, request("m1"));
  submit(rig, request("m2"));  // on their way to the worker, not yet handled
  int idle = 0;
  rig.worker.stop_intake([&] { ++idle; });
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  rig.loop.settle();
  EXPECT_EQ(idle, 0);

  submit(rig, request("m3"));  // after the drain: for another worker
  rig.loop.settle();
  for (const char* id : {"m1", "m2"}) rig.scripted->generation(id)->finish();
  ASSERT_TRUE(complete(rig, 2));
  ASSERT_TRUE(rig.loop.run_until([&] { return idle == 1; }));
  EXPECT_EQ(rig.scripted->started(), 2u) << "m3 was taken after the drain";
}

TEST(WorkflowWorker, StopIntakeCallsOnIdleOnceTheRunningGenerationsFinished) {
  Rig rig;
  submit(rig, request("m1"));
  submit(rig, request("m2"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));

  int idle = 0;
  rig.worker.stop_intake([&] { ++idle; });
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(complete(rig, 1));
  EXPECT_EQ(idle, 0);

  rig.scripted->generation("m2")->finish();
  ASSERT_TRUE(complete(rig, 2));
  EXPECT_EQ(idle, 1);
  EXPECT_TRUE(rig.tap.has_final(kBroadcast, "m2"));
}

TEST(WorkflowWorker, StopIntakeWaitsForTheRequestsWaitingForASlot) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  submit(rig, request("m1"));
  submit(rig, request("m2"));
  rig.loop.settle();
  ASSERT_EQ(rig.scripted->started(), 1u);

  int idle = 0;
  rig.worker.stop_intake([&] { ++idle; });
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(complete(rig, 1));
  ASSERT_EQ(rig.scripted->started(), 2u);  // the waiting request got the slot
  EXPECT_EQ(idle, 0);

  rig.scripted->generation("m2")->finish();
  ASSERT_TRUE(complete(rig, 2));
  EXPECT_EQ(idle, 1);
}

TEST(WorkflowWorker, UsersWaitingForASlotAreServedInTurn) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  for (int i = 1; i <= 4; ++i) submit(rig, request("a" + std::to_string(i)));
  auto b = request("b1");
  b.user_id = "another-user";
  submit(rig, b);
  rig.loop.settle();
  ASSERT_EQ(rig.scripted->started(), 1u);
  rig.scripted->generation("a1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  EXPECT_EQ(rig.scripted->generations()[1]->request().message_id, "b1")
      << "the other user's first request goes before this user's second";
  rig.scripted->generation("b1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 3; }));
  EXPECT_EQ(rig.scripted->generations()[2]->request().message_id, "a2");
}

TEST(WorkflowWorker, ACancelledWaitingRequestEndsAsCancelledWithoutEverStarting) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  submit(rig, request("m1"));
  submit(rig, request("m2"));
  rig.loop.settle();
  ASSERT_EQ(rig.scripted->started(), 1u);
  EXPECT_EQ(status_of(cancel(rig, "m2", "owner").value_or("")), "cancelling");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m2"); }));
  EXPECT_TRUE(ended_cancelled_unstarted(rig.tap, "m2"));
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(complete(rig, 2));
  EXPECT_EQ(rig.scripted->started(), 1u) << "m2 never reached the provider";
}

// The cancelled request ends in a slot of its own, which passes to nobody:
// handing it on would let one request more run at once per cancel.
TEST(WorkflowWorker, ACancelledWaitingRequestLetsNoOtherRequestRunBeyondMaxConcurrent) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  submit(rig, request("m1"));
  submit(rig, request("m2"));
  submit(rig, request("m3"));
  rig.loop.settle();
  EXPECT_EQ(status_of(cancel(rig, "m2", "owner").value_or("")), "cancelling");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m2"); }));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 1u) << "m3 started while m1 still ran";
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  EXPECT_EQ(rig.scripted->generations()[1]->request().message_id, "m3");
  EXPECT_EQ(rig.scripted->running(), 1u);
}

// The same for a request refused because too many wait (WORKER_MAX_CONCURRENT × 10).
TEST(WorkflowWorker, ARequestRefusedAsOverloadedLetsNoOtherRequestRunBeyondMaxConcurrent) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  submit(rig, request("m0"));
  for (int i = 1; i <= 10; ++i) submit(rig, request("m" + std::to_string(i)));  // the queue is full
  submit(rig, request("refused"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "refused"); }));
  auto chunks = rig.tap.chunks(kBroadcast, "refused");
  ASSERT_EQ(chunks.size(), 1u);
  ASSERT_TRUE(chunks[0].error);
  EXPECT_EQ(chunks[0].error->code, "worker_overloaded");
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 1u) << "a waiting request started while m0 still ran";
  for (int i = 0; i <= 10; ++i) {
    ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == static_cast<std::size_t>(i + 1); }));
    EXPECT_EQ(rig.scripted->running(), 1u) << "after " << i << " finished";
    rig.scripted->generations()[i]->finish();
  }
  ASSERT_TRUE(complete(rig, 12));
}

TEST(WorkflowWorker, AnotherUsersCancelLeavesAWaitingRequestWaiting) {
  Rig rig(worker_config(/*max_concurrent=*/1));
  submit(rig, request("m1"));
  submit(rig, request("m2"));
  rig.loop.settle();
  EXPECT_EQ(status_of(cancel(rig, "m2", "intruder").value_or("")), "forbidden");
  rig.scripted->generation("m1")->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 2; }));
  EXPECT_EQ(rig.scripted->generations()[1]->request().message_id, "m2");
}

TEST(WorkflowWorker, NoGenerationStartsAfterOnIdle) {
  Rig rig;
  int idle = 0;
  std::size_t started_at_idle = 0, running_at_idle = 0;
  // Shutdown begins as a request comes in: this handler posts stop_intake while
  // the worker takes the request off the bus (and posts it on to a slot).
  auto stopper = rig.bus.subscribe(std::string(subjects::kAllExecute), {}, [&](const bus::Message&) {
    asio::post(rig.loop.executor(), [&] {
      rig.worker.stop_intake([&] {
        ++idle;
        started_at_idle = rig.scripted->started();
        running_at_idle = rig.scripted->running();
      });
    });
  });
  submit(rig, request("m1"));
  rig.loop.settle();
  for (const auto& g : rig.scripted->generations()) g->finish();  // whatever was taken ends
  rig.loop.settle();

  ASSERT_TRUE(rig.loop.run_until([&] { return idle > 0; }));
  rig.loop.settle();
  EXPECT_EQ(idle, 1);
  EXPECT_EQ(running_at_idle, 0u);
  EXPECT_EQ(rig.scripted->started(), started_at_idle) << "a generation started after on_idle";
}

TEST(WorkflowWorker, RequestsPublishedAfterStopIntakeAreNotTaken) {
  Rig rig;
  rig.worker.stop_intake();
  submit(rig, request("m1"));
  rig.loop.settle();

  EXPECT_EQ(rig.tap.count(subjects::execute("s1")), 1u);  // it was on the bus
  EXPECT_EQ(rig.scripted->started(), 0u);
  EXPECT_EQ(rig.worker.active(), 0u);
  EXPECT_TRUE(rig.tap.chunk_subjects().empty());
}

TEST(WorkflowWorker, ARequestWhosePayloadNamesAnotherSessionThanItsSubjectIsNotRun) {
  Rig rig;
  rig.bus.publish(subjects::execute("s2"), protocol::encode(request("m1")));
  submit(rig, request("m2"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->generation("m2") != nullptr; }));
  rig.loop.settle();
  EXPECT_EQ(rig.scripted->started(), 1u);
  EXPECT_EQ(rig.scripted->generation("m1"), nullptr);
  rig.scripted->generation("m2")->finish();
  ASSERT_TRUE(complete(rig, 1));
}

// Submits `message_id` and waits for its generation to start (the rig's first).
std::shared_ptr<ScriptedGeneration> started_generation(Rig& rig, const std::string& message_id) {
  submit(rig, request(message_id));
  if (!rig.loop.run_until([&] { return rig.scripted->started() == 1; })) return nullptr;
  return rig.scripted->generation(message_id);
}

TEST(WorkflowWorker, ACancelWhoseSubjectNamesAnotherMessageIsIgnored) {
  Rig rig;
  auto generation = started_generation(rig, "m1");
  ASSERT_NE(generation, nullptr);
  auto reply = std::make_shared<std::optional<std::string>>();
  rig.bus.request(subjects::cancel("m9"), protocol::encode(protocol::CancelRequest{"m1", "s1", "owner"}), 300ms,
                  [reply](boost::system::error_code ec, std::string r) { *reply = ec ? "error" : r; });
  ASSERT_TRUE(rig.loop.run_until([&] { return reply->has_value(); }));
  EXPECT_EQ(**reply, "error");  // no answer: the request timed out
  EXPECT_FALSE(generation->cancelled());
  generation->finish();
  ASSERT_TRUE(complete(rig, 1));
}

// --- replay ------------------------------------------------------------------

void ask_replay(Rig& rig, const std::string& pod, const std::string& message_id = "") {
  rig.bus.publish(subjects::replay("s1"), protocol::encode(protocol::ReplayRequest{"s1", pod, message_id}));
}

TEST(WorkflowWorker, AReplayRequestResendsARunningReplyToTheAskingPod) {
  Rig rig;
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto generation = rig.scripted->generation("m1");
  generation->text("a ");
  generation->text("b ");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.count(kBroadcast) == 2; }));

  ask_replay(rig, "pod-late");
  const auto late = subjects::pod_response("pod-late");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.count(late) == 2; }));
  auto replayed = rig.tap.chunks(late);
  EXPECT_EQ(ids(replayed), (std::vector<std::uint32_t>{0, 1}));
  EXPECT_EQ(text(replayed), "a b ");
  generation->finish();
  ASSERT_TRUE(complete(rig, 1));
}

TEST(WorkflowWorker, AReplayRequestWhoseSubjectNamesAnotherSessionIsIgnored) {
  Rig rig;
  auto generation = started_generation(rig, "m1");
  ASSERT_NE(generation, nullptr);
  generation->text("a ");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.count(kBroadcast) == 1; }));

  rig.bus.publish(subjects::replay("s2"), protocol::encode(protocol::ReplayRequest{"s1", "pod-late", ""}));
  ask_replay(rig, "pod-other");  // a proper one, to know the first was read
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.count(subjects::pod_response("pod-other")) == 1; }));
  rig.loop.settle();
  EXPECT_EQ(rig.tap.count(subjects::pod_response("pod-late")), 0u);
  generation->finish();
  ASSERT_TRUE(complete(rig, 1));
}

TEST(WorkflowWorker, AReplayRequestAddsTheAskingPodToTheRoute) {
  Rig rig;
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto generation = rig.scripted->generation("m1");
  generation->text("a ");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.count(kBroadcast) == 1; }));

  // The registry does not know pod-late; the route cached for chunk 0 (1 s)
  // learns it from the replay request.
  ask_replay(rig, "pod-late");
  rig.loop.settle();
  generation->text("b ");
  generation->finish();
  ASSERT_TRUE(complete(rig, 1));

  EXPECT_EQ(ids(rig.tap.chunks(subjects::pod_response("pod-late"))), (std::vector<std::uint32_t>{0, 1, 2}));
  EXPECT_EQ(ids(rig.tap.chunks(kBroadcast)), (std::vector<std::uint32_t>{0}));
}

TEST(WorkflowWorker, AReplayRequestNamingAFinishedReplyResendsIt) {
  Rig rig;
  connect(rig, "s1", "pod-a", "c1");
  submit(rig, request("m1", "demo"));
  ASSERT_TRUE(complete(rig, 1));
  auto sent = rig.tap.chunks(subjects::pod_response("pod-a"));
  ASSERT_FALSE(sent.empty());

  ask_replay(rig, "pod-b", "m1");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(subjects::pod_response("pod-b"), "m1"); }));
  EXPECT_EQ(ids(rig.tap.chunks(subjects::pod_response("pod-b"))), ids(sent));
}

// --- the chunk log ---------------------------------------------------------

TEST(WorkflowWorker, AChunkTheLogRefusedIsAppendedAgainAndTheRequestEndsOnlyOnceEveryChunkIsLogged) {
  Rig rig(worker_config(), 0, true);
  rig.log.refuse(true);  // as while the NATS connection is down
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto generation = rig.scripted->generation("m1");
  generation->text("a ");
  generation->text("b ");
  generation->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m1"); }));
  // Every chunk went out live, none is in the log: the log is tried again, and
  // the request is not done with (acked) meanwhile.
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.log.appends() >= 3; }));
  EXPECT_TRUE(rig.log.chunks().empty());
  EXPECT_EQ(rig.worker.completed(), 0u);
  EXPECT_EQ(rig.worker.active(), 1u);

  rig.log.refuse(false);
  ASSERT_TRUE(complete(rig, 1));
  auto logged = rig.log.chunks();
  EXPECT_EQ(ids(logged), (std::vector<std::uint32_t>{0, 1, 2}));
  EXPECT_EQ(text(logged), "a b ");
  EXPECT_TRUE(logged.back().is_final);
}

// A log that refuses for good (no permission, no storage): the entry is given
// up after WorkerConfig::log_give_up, and the reply ends and frees its slot
// instead of holding them forever.
// The clock runs from the first refusal, not per entry: a long reply (five
// entries here) is not held five times as long.
TEST(WorkflowWorker, AnEntryTheLogRefusesForGoodIsGivenUpAndTheRequestEnds) {
  auto config = worker_config();
  config.log_give_up = 3s;  // five entries one after the other would take 15 s, past run_until's 10 s
  Rig rig(config, 0, true);
  rig.log.refuse(true);
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto generation = rig.scripted->generation("m1");
  for (int i = 0; i < 200; ++i) generation->text("a ");  // 1 + 64 + 64 + 64 + 8 chunks: five entries
  generation->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.worker.completed() == 1; }));
  EXPECT_EQ(rig.worker.active(), 0u);
  EXPECT_TRUE(rig.tap.has_final(kBroadcast, "m1")) << "the live chunks went out all the same";
}

// One provider event of a megabyte would be more than a NATS message holds:
// it goes out in pieces of at most 16 KiB, cut between characters, the text whole.
TEST(WorkflowWorker, AHugeProviderEventGoesOutInPiecesCutBetweenCharacters) {
  Rig rig;
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  std::string huge;
  while (huge.size() < 1024 * 1024) huge += "h\xC3\xA9llo w\xC3\xB6rld \xE2\x82\xAC ";  // 2- and 3-byte characters
  auto generation = rig.scripted->generation("m1");
  generation->text(huge);
  generation->finish();
  ASSERT_TRUE(complete(rig, 1));
  auto chunks = rig.tap.chunks(kBroadcast, "m1");
  ASSERT_GT(chunks.size(), huge.size() / (16 * 1024));
  std::string joined;
  for (const auto& c : chunks) {
    EXPECT_LE(c.chunk.size(), 16u * 1024);
    joined += c.chunk;
  }
  EXPECT_EQ(joined, huge);
  EXPECT_EQ(ids(chunks), zero_to(chunks.size()));
}

TEST(WorkflowWorker, ChunksMadeWhileTheLogIsBusyGoIntoItAsOneEntryInOrder) {
  Rig rig(worker_config(), 0, true);
  rig.log.hold();  // the log takes its time to answer
  submit(rig, request("m1"));
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto generation = rig.scripted->generation("m1");
  generation->text("a ");
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.log.appends() == 1; }));
  generation->text("b ");
  generation->text("c ");
  generation->finish();
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.tap.has_final(kBroadcast, "m1"); }));
  rig.loop.settle();
  EXPECT_EQ(rig.log.appends(), 1u) << "one append in flight per reply";
  EXPECT_EQ(rig.worker.completed(), 0u);

  rig.log.release();
  ASSERT_TRUE(complete(rig, 1));
  using Entries = std::vector<std::pair<std::string, std::size_t>>;
  EXPECT_EQ(rig.log.entries(), (Entries{{"m1:1:0-0", 1}, {"m1:1:1-3", 3}}));
  auto logged = rig.log.chunks();
  EXPECT_EQ(ids(logged), (std::vector<std::uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(text(logged), "a b c ");
  EXPECT_TRUE(logged.back().is_final);
}

}  // namespace
}  // namespace chat::worker

namespace chat::worker {
namespace {

struct SpanCollector final : trace::SpanSink {
  void add(trace::SpanData span) override {
    std::lock_guard lock(mutex);
    spans.push_back(std::move(span));
  }
  std::vector<trace::SpanData> named(const std::string& name) {
    std::lock_guard lock(mutex);
    std::vector<trace::SpanData> out;
    for (const auto& s : spans)
      if (s.name == name) out.push_back(s);
    return out;
  }
  std::mutex mutex;  // guards spans: runs end on their strands
  std::vector<trace::SpanData> spans;
};

constexpr const char* kPodSpan = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

TEST(WorkflowWorkerTrace, AGenerationJoinsTheTraceItsRequestCarriesAndHandsItToTheProvider) {
  SpanCollector spans;
  Rig rig(worker_config(), 0, false, trace::Tracer(spans, trace::Sampler::parent_based_always_on, 1.0));
  auto pod_span = *trace::parse_traceparent(kPodSpan, "pod=1");
  auto r = request("m1", "demo");
  rig.bus.publish(subjects::execute(r.session_id), protocol::encode(r),
                  bus::Headers{{"traceparent", kPodSpan}, {"tracestate", "pod=1"}}, {});
  ASSERT_TRUE(complete(rig, 1));
  ASSERT_TRUE(rig.loop.run_until([&] { return spans.named("provider demo").size() == 1; }));
  auto generate = spans.named("chat.generate").at(0);
  auto call = spans.named("provider demo").at(0);
  EXPECT_EQ(generate.context.trace_id, pod_span.trace_id);
  EXPECT_EQ(generate.parent, pod_span.span_id);
  EXPECT_EQ(generate.kind, trace::SpanKind::consumer);
  EXPECT_EQ(call.context.trace_id, pod_span.trace_id);
  EXPECT_EQ(call.parent, generate.context.span_id);
  EXPECT_EQ(call.kind, trace::SpanKind::client);
  EXPECT_EQ(call.context.tracestate, "pod=1");
  EXPECT_FALSE(generate.failed);

  // The provider is given the call's own span as the parent of its request.
  auto s = request("m2", "scripted");
  rig.bus.publish(subjects::execute(s.session_id), protocol::encode(s), bus::Headers{{"traceparent", kPodSpan}}, {});
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  auto headers = rig.scripted->trace_headers("m2");
  ASSERT_EQ(headers.size(), 1u);
  EXPECT_EQ(headers[0].first, "traceparent");
  auto sent = trace::parse_traceparent(headers[0].second);
  ASSERT_TRUE(sent);
  EXPECT_EQ(sent->trace_id, pod_span.trace_id);
  EXPECT_NE(sent->span_id, pod_span.span_id);
  EXPECT_TRUE(sent->sampled);
}

TEST(WorkflowWorkerTrace, AFailedGenerationEndsItsSpansAsErrors) {
  SpanCollector spans;
  Rig rig(worker_config(), 0, false, trace::Tracer(spans, trace::Sampler::always_on, 1.0));
  submit(rig, request("m1", "no-such-provider"));
  ASSERT_TRUE(complete(rig, 1));
  ASSERT_TRUE(rig.loop.run_until([&] { return spans.named("chat.generate").size() == 1; }));
  auto generate = spans.named("chat.generate").at(0);
  EXPECT_TRUE(generate.failed);
  EXPECT_EQ(generate.parent, trace::SpanId{});  // no header: a trace of its own
}

TEST(WorkflowWorkerTrace, WithTracingOffTheProviderGetsNoTraceHeaders) {
  Rig rig;
  auto r = request("m1", "scripted");
  rig.bus.publish(subjects::execute(r.session_id), protocol::encode(r), bus::Headers{{"traceparent", kPodSpan}}, {});
  ASSERT_TRUE(rig.loop.run_until([&] { return rig.scripted->started() == 1; }));
  EXPECT_TRUE(rig.scripted->trace_headers("m1").empty());
}

}  // namespace
}  // namespace chat::worker
