// The workflow worker on JetStream, against a real nats-server: requests that
// wait for a worker, a worker that dies with a request (the next attempt), an
// earlier attempt that had finished, and a request that runs out of attempts.

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <future>
#include <mutex>
#include <thread>

#include "bus/jetstream.hpp"
#include "bus/jetstream_chunk_log.hpp"
#include "bus/jetstream_work_queue.hpp"
#include "common/identifier.hpp"
#include "harness/server_process.hpp"
#include "protocol/subjects.hpp"
#include "providers/demo_provider.hpp"
#include "registry/memory_registry.hpp"
#include "worker/workflow_worker.hpp"

namespace chat::worker {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 30s) {
  for (auto until = std::chrono::steady_clock::now() + limit; !pred();) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// One NATS client with JetStream, as a pod or a worker has.
struct Client {
  Client(const std::string& url, bus::JetStreamOptions options)
      : bus(config(url), "js-worker-test"), js(bus, options, true), queue(js), log(js) {
    if (!eventually([&] { return js.ready(); })) throw std::runtime_error("JetStream never became ready");
  }
  static config::NatsConfig config(const std::string& url) {
    config::NatsConfig c;
    c.url = url;
    c.reconnect_wait = 100ms;
    return c;
  }
  bus::NatsBus bus;
  bus::JetStream js;
  bus::JetStreamWorkQueue queue;
  bus::JetStreamChunkLog log;
};

// The chunks published on the session's broadcast subject (no registry entries).
class Chunks {
 public:
  explicit Chunks(bus::MessageBus& bus)
      : sub_(bus.subscribe(std::string(subjects::kAllBroadcast), {}, [this](const bus::Message& m) {
          std::string error;
          if (auto c = protocol::decode_response_chunk(m.payload, error)) {
            std::lock_guard lock(mutex_);
            seen_.push_back(std::move(*c));
          }
        })) {}
  std::vector<protocol::ResponseChunk> of(const std::string& message_id) {
    std::lock_guard lock(mutex_);
    std::vector<protocol::ResponseChunk> out;
    for (const auto& c : seen_)
      if (c.message_id == message_id) out.push_back(c);
    return out;
  }
  bool finished(const std::string& message_id) {
    auto all = of(message_id);
    return std::any_of(all.begin(), all.end(), [](const auto& c) { return c.is_final; });
  }

 private:
  std::mutex mutex_;  // guards seen_: the handler runs on a bus thread
  std::vector<protocol::ResponseChunk> seen_;
  std::unique_ptr<bus::Subscription> sub_;
};

struct WorkerJetStream : ::testing::Test {
  bus::JetStreamOptions options = [] {
    bus::JetStreamOptions o;
    o.ack_wait = 1'500ms;
    o.max_deliver = 3;
    return o;
  }();
  test::ServerProcess nats{test::ServerProcess::Kind::nats};
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(ioc);
  std::thread thread{[this] { ioc.run(); }};
  Client pod{nats.nats_url(), options};
  Chunks chunks{pod.bus};
  registry::MemoryRegistry registry{ioc.get_executor()};

  ~WorkerJetStream() override { stop_loop(); }

  void stop_loop() {
    work.reset();
    ioc.stop();
    if (thread.joinable()) thread.join();
  }

  // A worker goes as chat-worker's goes: its loop stops first (a timer or a
  // run of it may be running there until then), then the worker.
  struct RunningWorker {
    WorkerJetStream& fixture;
    std::unique_ptr<WorkflowWorker> worker;
    ~RunningWorker() { fixture.stop_loop(); }
  };

  RunningWorker start_worker(Client& c, std::chrono::milliseconds progress_interval = 500ms,
                             providers::DemoOptions demo = {1ms, 3}) {
    config::WorkerConfig wc;
    wc.max_concurrent = 4;
    wc.progress_interval = progress_interval;
    auto w = std::make_unique<WorkflowWorker>(
        ioc.get_executor(), c.bus, c.queue, &c.log, registry, wc,
        std::vector<std::shared_ptr<providers::Provider>>{
            std::make_shared<providers::DemoProvider>(ioc.get_executor(), demo)});
    w->start();
    return RunningWorker{*this, std::move(w)};
  }

  std::string submit(const std::string& session_id = new_identifier("s_")) {
    protocol::WorkflowRequest r;
    r.message_id = new_identifier("msg_");
    r.session_id = session_id;
    r.user_id = "u1";
    r.message = "tell me something durable";
    std::promise<boost::system::error_code> done;
    pod.queue.submit(subjects::execute(r.session_id), protocol::encode(r), r.message_id, {},
                     [&](boost::system::error_code ec) { done.set_value(ec); });
    EXPECT_FALSE(done.get_future().get());
    return r.message_id;
  }

  // A worker that takes `wanted` deliveries and dies with them: never acks.
  // It asks for no more once it has them, so a redelivery cannot reach it
  // while the test stops it.
  std::unique_ptr<bus::Subscription> dying_worker(std::atomic<int>& taken, int wanted = 1) {
    return pod.queue.consume([&taken, wanted] { return taken.load() < wanted ? 1 : 0; },
                             [&taken](std::unique_ptr<bus::WorkItem>) { ++taken; });
  }
};

TEST_F(WorkerJetStream, ARequestPostedWhileNoWorkerRunsIsAnsweredWhenOneStarts) {
  auto id = submit();
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(chunks.of(id).empty());
  Client worker_client{nats.nats_url(), options};
  auto worker = start_worker(worker_client);
  ASSERT_TRUE(eventually([&] { return chunks.finished(id); }));
  for (const auto& c : chunks.of(id)) EXPECT_EQ(c.attempt, 1u);
  // Acked: nothing comes again after AckWait.
  std::this_thread::sleep_for(options.ack_wait + 1s);
  auto all = chunks.of(id);
  EXPECT_EQ(std::count_if(all.begin(), all.end(), [](const auto& c) { return c.is_final; }), 1);
}

TEST_F(WorkerJetStream, EveryChunkIsAlsoInTheLog) {
  Client worker_client{nats.nats_url(), options};
  auto worker = start_worker(worker_client);
  auto id = submit();
  // The final chunk goes out live before it is logged; a finished reply is
  // counted once all of it is in the log.
  ASSERT_TRUE(eventually([&] { return worker.worker->completed() >= 1; }));
  auto session = chunks.of(id).front().session_id;
  std::promise<std::vector<std::string>> read;
  pod.log.read(session, id, [&](boost::system::error_code, std::vector<std::string> p) { read.set_value(p); });
  std::vector<std::string> live, logged;
  for (const auto& c : chunks.of(id)) live.push_back(protocol::encode(c));
  for (const auto& p : read.get_future().get()) {
    std::string error;
    auto c = protocol::decode_response_chunk(p, error);
    ASSERT_TRUE(c) << error;
    logged.push_back(protocol::encode(*c));
  }
  EXPECT_EQ(logged, live);
}

TEST_F(WorkerJetStream, ARequestAWorkerDiedWithIsGeneratedAgainAsTheNextAttempt) {
  std::atomic<int> taken{0};
  auto dying = dying_worker(taken);
  auto id = submit();
  ASSERT_TRUE(eventually([&] { return taken.load() == 1; }));
  dying.reset();
  Client worker_client{nats.nats_url(), options};
  auto worker = start_worker(worker_client);
  ASSERT_TRUE(eventually([&] { return chunks.finished(id); }));
  for (const auto& c : chunks.of(id)) EXPECT_EQ(c.attempt, 2u);
}

TEST_F(WorkerJetStream, ARedeliveredRequestWhoseEarlierAttemptFinishedIsNotGeneratedAgain) {
  std::atomic<int> taken{0};
  auto dying = dying_worker(taken);
  auto id = submit("s_done");
  ASSERT_TRUE(eventually([&] { return taken.load() == 1; }));
  dying.reset();
  // The dead worker had published and logged its final chunk, then died before its ack.
  protocol::ResponseChunk final;
  final.session_id = "s_done";
  final.message_id = id;
  final.is_final = true;
  final.chunk_type = protocol::ChunkType::metadata;
  final.metadata = protocol::ChunkMetadata{"demo-1", 1, "stop"};
  std::promise<boost::system::error_code> logged;
  pod.log.append("s_done", id, id + ":1:0-0", {protocol::encode(final)}, [&](auto ec) { logged.set_value(ec); });
  ASSERT_FALSE(logged.get_future().get());
  Client worker_client{nats.nats_url(), options};
  auto worker = start_worker(worker_client);
  // Attempt 2 arrives after AckWait, finds the final in the log and is acked, not generated.
  std::this_thread::sleep_for(options.ack_wait * 3);
  EXPECT_TRUE(chunks.of(id).empty());
  std::atomic<int> later{0};
  auto probe = dying_worker(later);
  std::this_thread::sleep_for(options.ack_wait * 2);
  EXPECT_EQ(later.load(), 0) << "acked: no further delivery";
}

// The queue hears no keep-alive within its ack wait (here: they are rarer than
// it; in production: the bus was away that long) and delivers the request
// again to the worker that still runs it. The reply goes on; nothing restarts.
TEST_F(WorkerJetStream, ARequestDeliveredAgainWhileItsWorkerStillRunsItIsNotGeneratedAgain) {
  Client worker_client{nats.nats_url(), options};
  auto worker = start_worker(worker_client, 60s, providers::DemoOptions{50ms, 1});
  auto id = submit();
  ASSERT_TRUE(eventually([&] { return chunks.finished(id); }));
  auto all = chunks.of(id);
  ASSERT_GT(all.back().chunk_id, 40u) << "the reply (50 ms a chunk) outlasts the 1.5 s ack wait";
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].attempt, 1u);
    EXPECT_EQ(all[i].chunk_id, i) << "each chunk once, in order";
  }
  metrics::Exposition out;
  worker.worker->collect(out);
  const auto text = out.text();
  const std::string name = "\nchat_worker_redeliveries_kept_running_total ";
  auto at = text.find(name);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stod(text.substr(at + name.size())), 1.0) << "delivered again while it ran";
}

TEST_F(WorkerJetStream, ARequestOutOfAttemptsEndsWithAnErrorInsteadOfAnotherTry) {
  std::atomic<int> taken{0};
  auto dying = dying_worker(taken, 2);
  auto id = submit();
  // Deliveries 1 and 2 die; the third is the last (MaxDeliver 3).
  ASSERT_TRUE(eventually([&] { return taken.load() == 2; }));
  dying.reset();
  Client worker_client{nats.nats_url(), options};
  auto worker = start_worker(worker_client);
  ASSERT_TRUE(eventually([&] { return chunks.finished(id); }));
  auto all = chunks.of(id);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].attempt, 3u);
  ASSERT_TRUE(all[0].error);
  EXPECT_EQ(all[0].error->code, "retries_exhausted");
}

}  // namespace
}  // namespace chat::worker
