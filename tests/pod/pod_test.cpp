#include "pod/pod.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json.hpp>

#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "bus/bus_work_queue.hpp"
#include "bus/memory_bus.hpp"
#include "bus/memory_chunk_log.hpp"
#include "protocol/subjects.hpp"
#include "registry/memory_registry.hpp"
#include "store/database_held.hpp"
#include "store/sqlite_store.hpp"

namespace chat::pod {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::ip::tcp;
using namespace std::chrono_literals;

template <class T>
T wait(std::future<T> f) {
  if (f.wait_for(10s) != std::future_status::ready) throw std::runtime_error("timed out");
  return f.get();
}

// The bus of the embedded default, but one that can be told the network is down.
class SwitchableBus final : public bus::MessageBus {
 public:
  explicit SwitchableBus(asio::any_io_executor ex) : inner_(std::move(ex)) {}
  using bus::MessageBus::publish;
  void publish(std::string subject, std::string payload, bus::Headers headers, bus::PublishCallback done) override {
    if (!up_) {
      if (done) done(asio::error::not_connected);
      return;
    }
    inner_.publish(std::move(subject), std::move(payload), std::move(headers), std::move(done));
  }
  std::unique_ptr<bus::Subscription> subscribe(std::string p, std::string q, bus::MessageHandler h) override {
    return inner_.subscribe(std::move(p), std::move(q), std::move(h));
  }
  void request(std::string s, std::string p, std::chrono::milliseconds t, bus::ReplyCallback done) override {
    inner_.request(std::move(s), std::move(p), t, std::move(done));
  }
  ComponentStatus status() const override { return {"memory", true, true}; }
  // The publish fails as NATS does when the connection drops in between.
  void refuse_publishes() { up_ = false; }

 private:
  bus::MemoryBus inner_;
  std::atomic<bool> up_{true};
};

// The queue group of the embedded default, with the withdrawals the pod asks for
// kept (a queue group holds nothing to withdraw; JetStream's are tested apart).
class RecordingQueue final : public bus::WorkQueue {
 public:
  explicit RecordingQueue(bus::MessageBus& bus) : inner_(bus) {}
  void submit(std::string subject, std::string payload, std::string id, bus::Headers headers,
              bus::PublishCallback done) override {
    inner_.submit(std::move(subject), std::move(payload), std::move(id), std::move(headers), std::move(done));
  }
  void withdraw(const std::string& subject, const std::string& id) override {
    std::lock_guard lock(mutex_);
    withdrawn_.emplace_back(subject, id);
  }
  std::unique_ptr<bus::Subscription> consume(bus::FreeSlots free_slots, bus::WorkHandler handler) override {
    return inner_.consume(std::move(free_slots), std::move(handler));
  }
  ComponentStatus status() const override { return inner_.status(); }
  std::vector<std::pair<std::string, std::string>> withdrawn() {
    std::lock_guard lock(mutex_);
    return withdrawn_;
  }

 private:
  bus::BusWorkQueue inner_;
  std::mutex mutex_;  // guards withdrawn_: the pod asks from its shards' threads
  std::vector<std::pair<std::string, std::string>> withdrawn_;
};

// The cancels the workers hear, as a worker subscribes to them.
class CancelsHeard {
 public:
  explicit CancelsHeard(bus::MessageBus& bus)
      : subscription_(bus.subscribe(std::string(subjects::kAllCancel), "", [this](const bus::Message& m) {
          std::string error;
          auto c = protocol::decode_cancel_request(m.payload, error);
          ASSERT_TRUE(c) << error;
          std::lock_guard lock(mutex_);
          cancels_.push_back(*c);
        })) {}
  std::vector<protocol::CancelRequest> all() {
    std::lock_guard lock(mutex_);
    return cancels_;
  }

 private:
  std::mutex mutex_;  // guards cancels_: the bus delivers on its threads
  std::vector<protocol::CancelRequest> cancels_;
  std::unique_ptr<bus::Subscription> subscription_;  // last: goes first
};

// The log of the embedded default, but one that stands for a log on a server
// (JetStream) unless told it is in-process: its next reads can be made to fail
// as a JetStream read does while its server is away.
class SwitchableLog final : public bus::ChunkLog {
 public:
  explicit SwitchableLog(asio::any_io_executor ex)
      : executor_(ex), inner_(std::move(ex), std::chrono::minutes(10), 1 << 20) {}
  void append(const std::string& session_id, const std::string& message_id, std::string entry_id,
              const std::vector<std::string>& payloads, bus::PublishCallback done = {}) override {
    inner_.append(session_id, message_id, std::move(entry_id), payloads, std::move(done));
  }
  void read(const std::string& session_id, const std::string& message_id, bus::LogReadCallback done) override {
    // As every log does, it answers on a thread of its own, never inside the call.
    if (failing_reads_.fetch_sub(1) > 0)
      return asio::post(executor_, [done = std::move(done)] { done(asio::error::timed_out, {}); });
    inner_.read(session_id, message_id, std::move(done));
  }
  ComponentStatus status() const override {
    auto s = inner_.status();
    s.embedded = in_process_;
    return s;
  }
  void fail_reads(int n) { failing_reads_ = n; }
  void in_process() { in_process_ = true; }

 private:
  asio::any_io_executor executor_;
  bus::MemoryChunkLog inner_;
  std::atomic<int> failing_reads_{0};
  std::atomic<bool> in_process_{false};
};

// ReplyBudget: BUFFER_MAX_BYTES of the pod under test (0: none); MaxBuffers:
// BUFFER_MAX_BUFFERS, per shard; MaxReplyBytes: BUFFER_MAX_REPLY_BYTES;
// MaxAgeMs: BUFFER_MAX_AGE (looked for every tenth of it); ShutdownMs: SHUTDOWN_TIMEOUT.
template <std::size_t ReplyBudget = 0, std::size_t MaxBuffers = 10'000, std::size_t MaxReplyBytes = 8u << 20,
          long MaxAgeMs = 300'000, long ShutdownMs = 10'000>
struct PodFixture : ::testing::Test {
  std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("pod-test-" + std::to_string(::getpid()) + "-" +
                                                       std::to_string(std::rand()));
    std::filesystem::create_directories(d);
    return d;
  }();
  asio::io_context ioc{2};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(ioc);
  SwitchableBus bus{ioc.get_executor()};
  RecordingQueue queue{bus};
  SwitchableLog log{ioc.get_executor()};
  registry::MemoryRegistry registry{ioc.get_executor()};
  store::SqliteStore store{[this] {
    config::StoreConfig c;
    c.path = (dir / "chat.db").string();
    return c;
  }()};
  Pod pod{ioc, [] {
            PodOptions o;
            o.pod_id = "pod-t";
            // A worker's answer crosses a few strands: room for a loaded
            // machine under a sanitizer (another user's cancel waits it out).
            o.cancel_timeout = 1s;
            o.shutdown_timeout = std::chrono::milliseconds{ShutdownMs};
            o.hub.reply_memory_budget = ReplyBudget;
            o.hub.buffer.max_buffers = MaxBuffers;
            o.hub.buffer.max_reply_bytes = MaxReplyBytes;
            o.hub.buffer.max_age = std::chrono::milliseconds{MaxAgeMs};
            o.hub.cleanup_interval = std::chrono::milliseconds{MaxAgeMs / 10};
            return o;
          }(),
          bus, queue, &log, registry, store};
  std::vector<std::thread> threads;

  void SetUp() override {
    pod.start();
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { ioc.run(); });
  }
  void TearDown() override {
    work.reset();
    ioc.stop();
    for (auto& t : threads) t.join();
    // The store answers writes on its own thread, into the pod: every answer
    // is in before the pod goes (members go in reverse order, the pod first).
    std::promise<void> answered;
    store.flush([&](boost::system::error_code) { answered.set_value(); });
    answered.get_future().wait();
    std::filesystem::remove_all(dir);
  }

  ChatRequest chat(std::string session = "s1", std::string user = "u1") {
    ChatRequest r;
    r.session_id = std::move(session);
    r.user_id = std::move(user);
    r.message = "hello pod";
    return r;
  }

  using Answer = std::pair<boost::system::error_code, Accepted>;
  // The chat's answer, when it comes.
  std::future<Answer> submit_later(ChatRequest r) {
    auto answered = std::make_shared<std::promise<Answer>>();
    pod.submit(std::move(r), "corr_1",
               [answered](boost::system::error_code ec, Accepted a) { answered->set_value({ec, a}); });
    return answered->get_future();
  }
  Answer submit(ChatRequest r) { return wait(submit_later(std::move(r))); }

  // Ready when the drain is over.
  std::future<void> drain() {
    auto drained = std::make_shared<std::promise<void>>();
    pod.drain([drained] { drained->set_value(); });
    return drained->get_future();
  }
  // The drain is not over while the reply `message_id` of s1 is owed; it is
  // once that reply came and was stored.
  void expect_drain_waits_for(std::future<void>& drained, const std::string& message_id) {
    EXPECT_EQ(drained.wait_for(300ms), std::future_status::timeout) << "the accepted reply is still owed";
    publish_reply("s1", message_id, "last words");
    EXPECT_EQ(drained.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(messages("s1").size(), 2u) << "the reply was stored before the pod let go";
  }

  std::vector<store::StoredMessage> messages(const std::string& session, const std::string& user = "u1") {
    std::promise<std::vector<store::StoredMessage>> p;
    store.list_messages(session, user, 50, "", [&](boost::system::error_code ec, store::MessagePage page) {
      p.set_value(ec ? std::vector<store::StoredMessage>{} : page.messages);
    });
    return wait(p.get_future());
  }

  // A reply of one text chunk (id 0) and a final metadata chunk (id 1), as a worker sends it.
  void publish_reply(const std::string& session, const std::string& message, const std::string& text) {
    publish_text(session, message, text);
    publish_end(session, message);
  }
  static protocol::ResponseChunk text_chunk(const std::string& session, const std::string& message,
                                            std::uint32_t chunk_id, const std::string& text) {
    protocol::ResponseChunk c;
    c.session_id = session;
    c.message_id = message;
    c.chunk_id = chunk_id;
    c.chunk = text;
    c.timestamp = "2026-11-29T00:00:00Z";
    return c;
  }
  void publish_text(const std::string& session, const std::string& message, const std::string& text) {
    bus.publish(subjects::pod_response("pod-t"), protocol::encode(text_chunk(session, message, 0, text)));
  }
  void publish_end(const std::string& session, const std::string& message) {
    auto c = text_chunk(session, message, 1, "");
    c.is_final = true;
    c.chunk_type = protocol::ChunkType::metadata;
    c.metadata = protocol::ChunkMetadata{"demo-1", 2, "stop"};
    bus.publish(subjects::pod_response("pod-t"), protocol::encode(c));
  }

  template <class Pred>
  static bool eventually(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  // A stream of `session` opened on the pod (resuming at `cursor`, if any); the client's end.
  bool last_stream_taken = false;  // what open_client_stream's pod.open_stream said
  tcp::socket open_client_stream(const std::string& session, std::optional<sse::ResumeCursor> cursor = {}) {
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::socket client(client_ioc);
    client.connect(acceptor.local_endpoint());
    tcp::socket server(asio::make_strand(ioc));
    acceptor.accept(server);
    last_stream_taken = pod.open_stream(std::move(server), StreamRequest{session, std::move(cursor), "", "corr_2"});
    return client;
  }

  // What the client reads until `until` appears, the stream ends or `at_most` passes.
  std::string read_until(tcp::socket& client, std::string_view until, std::chrono::milliseconds at_most = 10s) {
    std::string got;
    char buf[4096];
    std::function<void()> read_more = [&] {
      client.async_read_some(asio::buffer(buf), [&](boost::system::error_code ec, std::size_t n) {
        got.append(buf, ec ? 0 : n);
        if (!ec && got.find(until) == std::string::npos) read_more();
      });
    };
    read_more();
    client_ioc.restart();
    client_ioc.run_for(at_most);
    client.cancel();
    client_ioc.restart();
    client_ioc.run();
    return got;
  }

  // Chunks 0..texts.size()-1 of a reply, the last one final, as one log entry.
  void log_reply(const std::string& session, const std::string& message, const std::vector<std::string>& texts) {
    std::vector<std::string> payloads;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      auto c = text_chunk(session, message, static_cast<std::uint32_t>(i), texts[i]);
      c.is_final = i + 1 == texts.size();
      payloads.push_back(protocol::encode(c));
    }
    log.append(session, message, message + ":1:0-" + std::to_string(texts.size() - 1), payloads);
  }

  asio::io_context client_ioc;
};

using PodTest = PodFixture<>;
using BudgetPodTest = PodFixture<1>;
using CrowdedPodTest = PodFixture<0, 1>;
using SmallReplyPodTest = PodFixture<0, 10'000, 1024>;
using ShortAgePodTest = PodFixture<0, 10'000, 8u << 20, 200>;
using ShortShutdownPodTest = PodFixture<0, 10'000, 8u << 20, 300'000, 300>;

TEST_F(PodTest, ASubmittedChatIsStoredAndPutOnTheBusNamingThisPod) {
  std::promise<std::string> published;
  auto sub = bus.subscribe(std::string(subjects::kAllExecute), "", [&](const bus::Message& m) {
    published.set_value(std::string(m.payload));
  });
  auto [ec, accepted] = submit(chat());
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(accepted.session_id, "s1");
  EXPECT_EQ(accepted.correlation_id, "corr_1");
  std::string error;
  auto request = protocol::decode_workflow_request(wait(published.get_future()), error);
  ASSERT_TRUE(request) << error;
  EXPECT_EQ(request->message_id, accepted.message_id);
  EXPECT_EQ(request->message, "hello pod");
  EXPECT_EQ(request->accepting_pod, "pod-t");
  auto stored = messages("s1");
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].role, "user");
}

TEST_F(PodTest, TheNextChatCarriesTheConversationSoFar) {
  auto [ec, first] = submit(chat());
  ASSERT_FALSE(ec);
  publish_reply("s1", first.message_id, "first answer");
  ASSERT_TRUE(eventually([&] { return messages("s1").size() == 2; }));
  std::promise<std::string> published;
  auto sub = bus.subscribe(std::string(subjects::kAllExecute), "", [&](const bus::Message& m) {
    published.set_value(std::string(m.payload));
  });
  submit(chat());
  std::string error;
  auto request = protocol::decode_workflow_request(wait(published.get_future()), error);
  ASSERT_TRUE(request);
  ASSERT_EQ(request->context.conversation_history.size(), 2u);
  EXPECT_EQ(request->context.conversation_history[1].content, "first answer");
}

TEST_F(PodTest, AReplyForAnAcceptedChatIsStoredWithNoStreamOpen) {
  auto [ec, accepted] = submit(chat());
  ASSERT_FALSE(ec);
  publish_reply("s1", accepted.message_id, "the answer");
  ASSERT_TRUE(eventually([&] { return messages("s1").size() == 2; }));
  auto reply = messages("s1")[1];
  EXPECT_EQ(reply.message_id, accepted.message_id);
  EXPECT_EQ(reply.content, "the answer");
  EXPECT_EQ(reply.status, "complete");
  EXPECT_EQ(pod.stats().replies_stored.value(), 1u);
  EXPECT_TRUE(queue.withdrawn().empty()) << "a reply that ran is not withdrawn";
}

TEST_F(PodTest, DeletingASessionWithdrawsTheRequestsOfItsRepliesStillWaiting) {
  auto [ec, accepted] = submit(chat("s5", "u1"));
  ASSERT_FALSE(ec);
  pod.end_session("s5", "u1");
  ASSERT_TRUE(eventually([&] { return !queue.withdrawn().empty(); })) << "it would run for a session that is gone";
  EXPECT_EQ(queue.withdrawn(), (std::vector<std::pair<std::string, std::string>>{
                                   {"chat.workflow.execute.s5", accepted.message_id}}));
}

TEST_F(PodTest, DeletingASessionTellsTheOtherPods) {
  std::promise<std::pair<std::string, std::string>> heard;  // subject, payload
  auto deletions = bus.subscribe(std::string(subjects::kAllSessionDeleted), "", [&](const bus::Message& m) {
    heard.set_value({std::string(m.subject), std::string(m.payload)});
  });
  pod.end_session("s9", "u1");
  auto [subject, payload] = wait(heard.get_future());
  std::string error;
  auto deleted = protocol::decode_session_deleted_on(subject, payload, error);
  ASSERT_TRUE(deleted) << error;
  EXPECT_EQ(*deleted, (protocol::SessionDeleted{"s9", "u1", "pod-t"}));
}

// The id is free again once deleted, for any user: a stream of it left open on
// another pod would receive the next owner's replies.
TEST_F(PodTest, ASessionDeletedThroughAnotherPodEndsItsStreamsHere) {
  auto client = open_client_stream("s7");
  EXPECT_TRUE(last_stream_taken);
  ASSERT_TRUE(eventually([&] { return pod.open_streams() == 1; }));
  bus.publish(subjects::session_deleted("s7"), protocol::encode(protocol::SessionDeleted{"s7", "u1", "pod-other"}));
  auto got = read_until(client, "session_deleted", 5s);
  EXPECT_NE(got.find("event: reset"), std::string::npos) << got;
  EXPECT_NE(got.find("\"reason\":\"session_deleted\""), std::string::npos) << got;
  EXPECT_TRUE(eventually([&] { return pod.open_streams() == 0; }));
}

TEST_F(PodTest, AChatTheBusRefusesIsTakenBackWhole) {
  bus.refuse_publishes();
  auto [ec, accepted] = submit(chat("s2"));
  EXPECT_EQ(ec, Errc::bus_unavailable);
  ASSERT_TRUE(eventually([&] { return messages("s2").empty(); })) << "the user message must be rolled back";
  // The hub forgets the expectation on the session's shard, after submit has answered.
  EXPECT_TRUE(eventually([&] { return pod.health().hub.buffers == 0u; })) << "and its reply no longer expected";
  // A refusal cannot tell that the server did not store it (an acknowledgement lost).
  ASSERT_EQ(queue.withdrawn().size(), 1u) << "it must not run later";
  EXPECT_EQ(queue.withdrawn().front().first, "chat.workflow.execute.s2");
}

TEST_F(PodTest, AnotherUsersSessionIsRefused) {
  ASSERT_FALSE(submit(chat("s3", "owner")).first);
  EXPECT_EQ(submit(chat("s3", "intruder")).first, store::Errc::forbidden);
}

TEST_F(PodTest, CancelWithNoWorkerRunningTheReplyIsNotFound) {
  std::promise<boost::system::error_code> p;
  pod.cancel("msg_x", "s1", "u1", [&](boost::system::error_code ec) { p.set_value(ec); });
  EXPECT_EQ(wait(p.get_future()), Errc::no_running_reply);
}

TEST_F(PodTest, CancelReportsWhatTheWorkerAnswers) {
  auto worker = bus.subscribe(std::string(subjects::kAllCancel), "", [&](const bus::Message& m) {
    std::string error;
    auto c = protocol::decode_cancel_request(m.payload, error);
    bus.publish(std::string(m.reply_to), c->user_id == "u1" ? R"({"status":"cancelling"})" : R"({"status":"forbidden"})");
  });
  for (auto [user, want] : {std::pair<std::string, boost::system::error_code>{"u1", {}}, {"u2", Errc::not_owner}}) {
    std::promise<boost::system::error_code> p;
    pod.cancel("msg_x", "s1", user, [&](boost::system::error_code ec) { p.set_value(ec); });
    EXPECT_EQ(wait(p.get_future()), want) << user;
  }
}

// Every worker busy (or none up): the request waits in the work queue, where
// no worker answers a cancel. The pod that accepted it does.
TEST_F(PodTest, ItsUserCancelsAChatNoWorkerTookYetAndTheReplyEndsCancelledAtOnce) {
  CancelsHeard workers(bus);
  auto client = open_client_stream("s1");
  ASSERT_NE(read_until(client, "event: connected").find("event: connected"), std::string::npos);
  auto [ec, accepted] = submit(chat("s1", "u1"));
  ASSERT_FALSE(ec);
  auto cancel = [&](const std::string& user) {
    auto p = std::make_shared<std::promise<boost::system::error_code>>();
    pod.cancel(accepted.message_id, "", user, [p](boost::system::error_code e) { p->set_value(e); });
    return p->get_future();
  };
  EXPECT_EQ(wait(cancel("u2")), Errc::not_owner) << "another user's cancel: the same 404 as for a reply nobody runs";
  auto first = cancel("u1");
  auto double_click = cancel("u1");
  EXPECT_EQ(wait(std::move(first)), boost::system::error_code{}) << "202, not the 404 of a reply nobody runs";
  EXPECT_EQ(wait(std::move(double_click)), boost::system::error_code{}) << "the second of two at once: the same 202";
  auto got = read_until(client, "event: message_complete");
  EXPECT_NE(got.find("\"code\":\"cancelled\""), std::string::npos) << got;
  EXPECT_NE(got.find("\"finish_reason\":\"cancelled\""), std::string::npos) << got;
  ASSERT_TRUE(eventually([&] { return messages("s1").size() == 2; }));
  EXPECT_EQ(messages("s1")[1].message_id, accepted.message_id);
  EXPECT_EQ(messages("s1")[1].status, "cancelled");
  EXPECT_EQ(messages("s1")[1].content, "");
  using Withdrawn = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(queue.withdrawn(), (Withdrawn{{"chat.workflow.execute.s1", accepted.message_id}}))
      << "its request, should it wait in the queue, is not run later";

  EXPECT_EQ(wait(cancel("u1")), boost::system::error_code{}) << "sent again: the first answer";
  EXPECT_EQ(wait(cancel("u2")), Errc::not_owner);
  EXPECT_EQ(workers.all().size(), 5u)
      << "the five cancels, and none sent by the pod on its own: the workers had the user's";

  // A worker that was not up to hear the cancel takes the request from the queue.
  publish_text("s1", accepted.message_id, "too late");
  ASSERT_TRUE(eventually([&] { return workers.all().size() == 6u; })) << "that worker is told again";
  EXPECT_EQ(workers.all()[5].message_id, accepted.message_id);
  EXPECT_EQ(workers.all()[5].user_id, "u1") << "in the name of the user who asked";
  EXPECT_EQ(read_until(client, "too late", 300ms).find("too late"), std::string::npos) << "its chunks are late";
  EXPECT_EQ(messages("s1")[1].status, "cancelled");
}

TEST_F(PodTest, AStreamIsRegisteredWhileOpenAndGetsItsSessionsReplies) {
  auto client = open_client_stream("s1");
  auto live_pods = [&] {
    std::promise<std::vector<std::string>> p;
    registry.live_pods("s1", [&](boost::system::error_code, std::vector<std::string> pods) { p.set_value(pods); });
    return wait(p.get_future());
  };
  ASSERT_TRUE(eventually([&] { return live_pods() == std::vector<std::string>{"pod-t"}; }));
  auto [ec, accepted] = submit(chat());
  publish_reply("s1", accepted.message_id, "streamed");
  std::string got;
  char buf[4096];
  while (got.find("event: message_complete") == std::string::npos) {
    boost::system::error_code read_ec;
    auto n = client.read_some(asio::buffer(buf), read_ec);
    ASSERT_FALSE(read_ec) << read_ec.message();
    got.append(buf, n);
  }
  EXPECT_NE(got.find("text/event-stream"), std::string::npos);
  EXPECT_NE(got.find("event: connected"), std::string::npos);
  EXPECT_NE(got.find("\"chunk\":\"streamed\""), std::string::npos);
  client.close();
  EXPECT_TRUE(eventually([&] { return live_pods().empty(); })) << "a closed stream leaves the registry";
  EXPECT_TRUE(eventually([&] { return pod.open_streams() == 0; }));
}

// The worker publishes a chunk live before it logs it: a client can resume
// from a chunk whose reply the log does not have yet.
TEST_F(PodTest, AResumeWaitsForACursorsReplyTheLogHasNotTakenYet) {
  auto client = open_client_stream("s1", sse::ResumeCursor{"msg_young", 0});
  ASSERT_TRUE(eventually([&] { return pod.stats().cursor_reads_retried.value() >= 1; }))
      << "the first read found nothing: the stream waits and reads again";
  log_reply("s1", "msg_young", {"seen ", "unseen ", "end"});
  auto got = read_until(client, "event: message_complete");
  EXPECT_EQ(got.find("event: reset"), std::string::npos) << got;
  EXPECT_EQ(got.find("\"chunk\":\"seen \""), std::string::npos) << "the chunk the cursor names went before";
  EXPECT_NE(got.find("\"chunk\":\"unseen \""), std::string::npos) << got;
  EXPECT_NE(got.find("\"chunk\":\"end\""), std::string::npos) << got;
}

TEST_F(PodTest, AResumeFromAReplyTheLogNeverHadIsResetAfterTheRetries) {
  auto client = open_client_stream("s1", sse::ResumeCursor{"msg_gone", 3});
  auto got = read_until(client, "resume_window_passed");
  EXPECT_NE(got.find("event: reset"), std::string::npos) << got;
  EXPECT_EQ(pod.stats().cursor_reads_retried.value(), 4u);
}

// The in-process log lags by an append at most, and what a restart lost it
// never gets: a page coming back to a restarted chatd reloads at once.
TEST_F(PodTest, WithTheInProcessLogAResumeFromAReplyItNeverHadIsResetAfterOneRetry) {
  log.in_process();
  auto client = open_client_stream("s1", sse::ResumeCursor{"msg_gone", 3});
  auto got = read_until(client, "resume_window_passed");
  EXPECT_NE(got.find("event: reset"), std::string::npos) << got;
  EXPECT_EQ(pod.stats().cursor_reads_retried.value(), 1u);
}

TEST_F(PodTest, AResumeWhoseLogReadFailsReadsAgainBeforeGivingUp) {
  log_reply("s1", "msg_1", {"seen ", "unseen ", "end"});
  log.fail_reads(2);  // the log's server is away for a moment
  auto client = open_client_stream("s1", sse::ResumeCursor{"msg_1", 0});
  auto got = read_until(client, "event: message_complete");
  EXPECT_EQ(got.find("event: reset"), std::string::npos) << got;
  EXPECT_NE(got.find("\"chunk\":\"unseen \""), std::string::npos) << got;
  EXPECT_EQ(pod.stats().failed_reads_retried.value(), 2u);
  EXPECT_EQ(pod.stats().resume_log_read.snapshot().count, 3u) << "every read timed, the failed ones too";
}

TEST_F(PodTest, AResumeWhoseLogStaysUnreadableIsResetAfterTheRetries) {
  log.fail_reads(100);
  auto client = open_client_stream("s1", sse::ResumeCursor{"msg_1", 0});
  auto got = read_until(client, "resume_unavailable");
  EXPECT_NE(got.find("event: reset"), std::string::npos) << got;
  EXPECT_EQ(pod.stats().failed_reads_retried.value(), 4u);
}

TEST_F(PodTest, HealthSaysEmbeddedAndHealthy) {
  auto h = to_json(pod.health());
  EXPECT_EQ(h.at("status").as_string(), "healthy");
  EXPECT_EQ(h.at("mode").as_string(), "embedded");
  EXPECT_EQ(h.at("pod_id").as_string(), "pod-t");
  EXPECT_FALSE(h.at("nats_connected").as_bool());
  EXPECT_TRUE(pod.health().ready());
}

TEST_F(PodTest, TheHealthSubjectAnswersWithTheHealthJson) {
  std::promise<std::string> p;
  bus.request(subjects::pod_health("pod-t"), "", 5s, [&](boost::system::error_code, std::string reply) { p.set_value(reply); });
  auto v = json::parse(wait(p.get_future()));
  EXPECT_EQ(v.at("pod_id").as_string(), "pod-t");
}

// The API refuses streams while the pod drains, but checks before its store
// and limiter round trips: one that reaches the pod after the drain began gets
// the 503 too, not a closed socket.
TEST_F(PodTest, AStreamThatArrivesWhileThePodDrainsIsAnswered503) {
  auto drained = drain();
  auto client = open_client_stream("s1");
  EXPECT_FALSE(last_stream_taken) << "the API counts this stream's answer by it";
  auto got = read_until(client, "}");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 503 ")) << got;
  EXPECT_NE(got.find(R"("code":"unavailable")"), std::string::npos) << got;
  EXPECT_EQ(pod.open_streams(), 0u);
  EXPECT_EQ(drained.wait_for(10s), std::future_status::ready);
}

TEST_F(PodTest, DrainWaitsForAcceptedRepliesThenRefusesNewWork) {
  auto [ec, accepted] = submit(chat());
  ASSERT_FALSE(ec);
  auto done = drain();
  EXPECT_TRUE(pod.health().draining);
  EXPECT_FALSE(pod.health().ready());
  EXPECT_EQ(submit(chat()).first, Errc::draining);
  expect_drain_waits_for(done, accepted.message_id);
}

// A chat past the drain's check but still at the store when the drain begins
// is answered like any other, and the drain waits for its reply: it must not
// tell the client 200 for a reply sent to a pod that no longer listens.
TEST_F(PodTest, DrainWaitsForAChatStillAtTheStore) {
  store::DatabaseHeld held(dir / "chat.db");
  auto answered = submit_later(chat());
  auto done = drain();
  EXPECT_EQ(done.wait_for(300ms), std::future_status::timeout) << "a chat is still in flight";
  held.let_go();
  auto [ec, accepted] = wait(std::move(answered));
  ASSERT_FALSE(ec) << ec.message();
  expect_drain_waits_for(done, accepted.message_id);
}

// A DELETE of the session while a chat's store call runs: the chat's message
// went with the session (or made it again), so no reply is generated for it,
// and the client hears that the session is gone.
TEST_F(PodTest, AChatWhoseSessionIsDeletedWhileItIsStoredIsRefused) {
  ASSERT_FALSE(submit(chat()).first);
  std::atomic<int> requests{0};
  auto sub = bus.subscribe(std::string(subjects::kAllExecute), "", [&](const bus::Message&) { ++requests; });
  store::DatabaseHeld held(dir / "chat.db");
  auto answered = submit_later(chat());  // at the store, behind the lock
  pod.end_session("s1", "u1");  // as the API does once the store deleted it
  held.let_go();
  EXPECT_EQ(wait(std::move(answered)).first, store::Errc::not_found);
  EXPECT_TRUE(eventually([&] { return pod.health().hub.buffers == 0u; })) << "no reply is expected";
  EXPECT_EQ(requests.load(), 0) << "no worker is asked for it";
  auto later = submit(chat());
  EXPECT_FALSE(later.first) << "a chat sent after the deletion makes the session again";
}

// Past the shutdown timeout the drain waits no more; a chat that was still at
// the store is then refused, and its user message taken back.
TEST_F(ShortShutdownPodTest, AChatStillAtTheStoreWhenTheDrainGivesUpIsRefusedAndTakenBack) {
  store::DatabaseHeld held(dir / "chat.db");
  auto answered = submit_later(chat());
  EXPECT_EQ(drain().wait_for(10s), std::future_status::ready);
  held.let_go();
  EXPECT_EQ(wait(std::move(answered)).first, Errc::draining);
  EXPECT_TRUE(messages("s1").empty());
}

}  // namespace
}  // namespace chat::pod

namespace chat::pod {
namespace {

TEST_F(BudgetPodTest, NewChatsWaitWhileTheRepliesInFlightFillTheBudgetAndNotAfter) {
  auto [ec, accepted] = submit(chat("s1"));
  ASSERT_FALSE(ec) << "nothing in flight yet";
  publish_text("s1", accepted.message_id, "the first words of a long answer");
  ASSERT_TRUE(eventually([&] { return pod.health().hub.reply_bytes > 0; }));
  EXPECT_EQ(submit(chat("s2")).first, Errc::memory_full);
  EXPECT_EQ(pod.stats().memory_full_refusals.value(), 1u);
  publish_end("s1", accepted.message_id);
  ASSERT_TRUE(eventually([&] { return pod.health().hub.reply_bytes == 0; }))
      << "a finished reply leaves the budget (its frames too, past the shard's share)";
  EXPECT_FALSE(submit(chat("s2")).first);
  EXPECT_TRUE(eventually([&] { return messages("s1").size() == 2; })) << "the reply in flight was stored whole";
}

TEST_F(CrowdedPodTest, ANewChatIsRefusedRatherThanEvictAReplyAcceptedBefore) {
  auto [ec, accepted] = submit(chat("s1"));
  ASSERT_FALSE(ec);
  ASSERT_TRUE(eventually([&] { return pod.health().hub.buffers == 1; }));
  // The session's shard holds its one buffer: another reply there would evict the first.
  EXPECT_EQ(submit(chat("s1")).first, Errc::memory_full);
  EXPECT_EQ(pod.stats().memory_full_refusals.value(), 1u);
  publish_reply("s1", accepted.message_id, "all of it");
  ASSERT_TRUE(eventually([&] { return messages("s1").size() == 2; }));
  EXPECT_EQ(messages("s1").back().status, "complete") << "the first reply was not evicted";
  ASSERT_TRUE(eventually([&] { return pod.health().hub.buffers == 0; }));
  EXPECT_FALSE(submit(chat("s1")).first);
}

TEST_F(CrowdedPodTest, AnotherPodsReplyMakesRoomForANewChat) {
  publish_text("s1", "m-other", "another pod accepted this one");
  ASSERT_TRUE(eventually([&] { return pod.health().hub.buffers == 1; }));
  auto [ec, accepted] = submit(chat("s1"));
  EXPECT_FALSE(ec) << "that pod stores its reply: its buffer here is evicted, not the new chat refused";
  EXPECT_EQ(pod.stats().memory_full_refusals.value(), 0u);
  publish_reply("s1", accepted.message_id, "all of it");
  ASSERT_TRUE(eventually([&] { return messages("s1").size() == 2; }));
  EXPECT_EQ(messages("s1").back().status, "complete");
}

TEST_F(SmallReplyPodTest, AReplyCutForItsSizeIsCancelledAtItsWorkerInTheUsersNameAndAWholeOneIsNot) {
  CancelsHeard worker(bus);
  auto whole = submit(chat("s1", "u1")).second;
  publish_reply("s1", whole.message_id, "short enough");
  ASSERT_TRUE(eventually([&] { return messages("s1").size() == 2; }));

  auto [ec, cut] = submit(chat("s2", "u2"));
  ASSERT_FALSE(ec);
  publish_text("s2", cut.message_id, std::string(2048, 'x'));  // over BUFFER_MAX_REPLY_BYTES
  ASSERT_TRUE(eventually([&] { return !worker.all().empty(); }))
      << "the worker would go on generating what the pod drops";
  auto cancels = worker.all();
  ASSERT_EQ(cancels.size(), 1u) << "the whole reply's worker had ended it: no cancel before this one";
  EXPECT_EQ(cancels[0].message_id, cut.message_id);
  EXPECT_EQ(cancels[0].session_id, "s2");
  EXPECT_EQ(cancels[0].user_id, "u2") << "a worker stops a reply for the user who asked only";
  ASSERT_TRUE(eventually([&] { return messages("s2", "u2").size() == 2; }));
  EXPECT_EQ(messages("s2", "u2")[1].status, "incomplete");
}

TEST_F(ShortAgePodTest, AReplyNoWorkerEverAnswersEndsStoredIncompleteAndIsCancelledInTheUsersName) {
  std::promise<protocol::CancelRequest> cancelled;
  auto worker = bus.subscribe(std::string(subjects::kAllCancel), "", [&](const bus::Message& m) {
    std::string error;
    cancelled.set_value(*protocol::decode_cancel_request(m.payload, error));
  });
  auto [ec, accepted] = submit(chat("s1", "u1"));
  ASSERT_FALSE(ec);
  // Nothing comes: its empty buffer goes at BUFFER_MAX_AGE, and the reply ends at twice that.
  ASSERT_TRUE(eventually([&] { return messages("s1").size() == 2; })) << "the user's chat would stay unanswered";
  auto reply = messages("s1")[1];
  EXPECT_EQ(reply.message_id, accepted.message_id);
  EXPECT_EQ(reply.status, "incomplete");
  EXPECT_EQ(reply.content, "");
  EXPECT_EQ(queue.withdrawn(), (std::vector<std::pair<std::string, std::string>>{
                                   {"chat.workflow.execute.s1", accepted.message_id}}));
  auto cancel = wait(cancelled.get_future());
  EXPECT_EQ(cancel.message_id, accepted.message_id);
  EXPECT_EQ(cancel.user_id, "u1");
}

}  // namespace
}  // namespace chat::pod
