// The ChunkLog contract (bus/chunk_log.hpp), against the in-process log and
// against JetStream on a real nats-server.

#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "bus/durable_test_support.hpp"
#include "common/identifier.hpp"

namespace chat::test {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> read(bus::ChunkLog& log, const std::string& session, const std::string& message = {}) {
  std::promise<std::vector<std::string>> p;
  log.read(session, message, [&](boost::system::error_code ec, std::vector<std::string> got) {
    if (ec) got = {"error: " + ec.message()};
    p.set_value(std::move(got));
  });
  auto f = p.get_future();
  if (f.wait_for(20s) != std::future_status::ready) return {"timed out"};
  return f.get();
}

boost::system::error_code append(bus::ChunkLog& log, const std::string& session, const std::string& message,
                                 const std::string& entry, const std::vector<std::string>& payloads) {
  std::promise<boost::system::error_code> p;
  log.append(session, message, entry, payloads, [&](boost::system::error_code ec) { p.set_value(ec); });
  auto f = p.get_future();
  if (f.wait_for(20s) != std::future_status::ready) return boost::asio::error::timed_out;
  return f.get();
}

template <class Impl>
class ChunkLogConformance : public ::testing::Test {
 protected:
  Impl impl_;
  std::string session_ = new_identifier("s");
};

struct ImplName {
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

using Implementations = ::testing::Types<MemoryDurable, JetStreamDurable>;
TYPED_TEST_SUITE(ChunkLogConformance, Implementations, ImplName);

TYPED_TEST(ChunkLogConformance, ASessionReadsBackInAppendOrder) {
  auto& writer = this->impl_.log(0);
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:0", {"a"}));
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:1", {"b"}));
  ASSERT_FALSE(append(writer, this->session_, "m2", "m2:1:0", {"c"}));
  ASSERT_FALSE(append(writer, "other", "m9", "m9:1:0", {"x"}));
  EXPECT_EQ(read(this->impl_.log(1), this->session_), (std::vector<std::string>{"a", "b", "c"}));
}

TYPED_TEST(ChunkLogConformance, OneMessageReadsAlone) {
  auto& writer = this->impl_.log(0);
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:0", {"a"}));
  ASSERT_FALSE(append(writer, this->session_, "m2", "m2:1:0", {"c"}));
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:1", {"b"}));
  EXPECT_EQ(read(this->impl_.log(1), this->session_, "m1"), (std::vector<std::string>{"a", "b"}));
}

TYPED_TEST(ChunkLogConformance, AnEntryAppendedTwiceIsStoredOnce) {
  auto& writer = this->impl_.log(0);
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:0", {"a"}));
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:0", {"a"}));
  EXPECT_EQ(read(this->impl_.log(1), this->session_), (std::vector<std::string>{"a"}));
}

TYPED_TEST(ChunkLogConformance, AnEntryOfSeveralPayloadsReadsBackAsThemInOrder) {
  auto& writer = this->impl_.log(0);
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:0-0", {"{\"chunk_id\":0}"}));
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:1-3",
                      {"{\"chunk_id\":1}", "{\"chunk_id\":2,\"chunk\":\"two\\nlines\"}", "{\"chunk_id\":3}"}));
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:1-3", {"{\"chunk_id\":1}", "{\"chunk_id\":2}"}));
  EXPECT_EQ(read(this->impl_.log(1), this->session_, "m1"),
            (std::vector<std::string>{"{\"chunk_id\":0}", "{\"chunk_id\":1}",
                                      "{\"chunk_id\":2,\"chunk\":\"two\\nlines\"}", "{\"chunk_id\":3}"}));
}

TYPED_TEST(ChunkLogConformance, AnUnknownSessionReadsEmpty) {
  EXPECT_EQ(read(this->impl_.log(0), "never-written"), std::vector<std::string>{});
}

TYPED_TEST(ChunkLogConformance, ManyEntriesReadBackWhole) {
  auto& writer = this->impl_.log(0);
  std::vector<std::string> want;
  for (int i = 0; i < 500; ++i) {
    want.push_back("{\"chunk_id\":" + std::to_string(i) + "}");
    writer.append(this->session_, "m1", "m1:1:" + std::to_string(i), {want.back()});
  }
  ASSERT_FALSE(append(writer, this->session_, "m1", "m1:1:500", {"end"}));
  want.push_back("end");
  EXPECT_EQ(read(this->impl_.log(1), this->session_, "m1"), want);
}

// A long chat at chat pace: every chunk its own entry, many replies in one session.
TYPED_TEST(ChunkLogConformance, ASessionOfThousandsOfEntriesReadsBackWhole) {
  auto& writer = this->impl_.log(0);
  const std::string filler(200, 'x');
  std::vector<std::string> want;
  for (int m = 0; m < 20; ++m) {
    auto message = "m" + std::to_string(m);
    for (int i = 0; i < 120; ++i) {
      want.push_back("{\"m\":" + std::to_string(m) + ",\"chunk_id\":" + std::to_string(i) + ",\"t\":\"" + filler + "\"}");
      writer.append(this->session_, message, message + ":1:" + std::to_string(i), {want.back()});
    }
  }
  ASSERT_FALSE(append(writer, this->session_, "end", "end:1:0", {"end"}));
  want.push_back("end");
  auto got = read(this->impl_.log(1), this->session_);
  EXPECT_EQ(got.size(), want.size());
  EXPECT_EQ(got, want);
}

// Sessions log side by side, and pods read one of them again and again (every
// resume does). Found by a chaos run: nats-server 2.9's count of what a
// filtered consumer still has to send drifted after the first read, so reads
// stopped short, or waited for entries that did not exist until they timed out.
TYPED_TEST(ChunkLogConformance, ASessionAmongOthersReadsBackWholeEveryTime) {
  auto& writer = this->impl_.log(0);
  const std::string filler(200, 'x');
  std::vector<std::string> want;
  for (int i = 0; i < 400; ++i) {
    for (int other = 0; other < 5; ++other)
      writer.append(this->session_ + "o" + std::to_string(other), "m", "m:1:" + std::to_string(i), {filler});
    auto message = "m" + std::to_string(i / 40);
    want.push_back("{\"chunk_id\":" + std::to_string(i) + ",\"t\":\"" + filler + "\"}");
    writer.append(this->session_, message, message + ":1:" + std::to_string(i), {want.back()});
  }
  ASSERT_FALSE(append(writer, this->session_, "end", "end:1:0", {"end"}));
  want.push_back("end");
  for (int round = 0; round < 4; ++round) {
    auto got = read(this->impl_.log(round % 2), this->session_);
    ASSERT_EQ(got.size(), want.size()) << "read " << round;
    EXPECT_EQ(got, want) << "read " << round;
  }
}

// A pod's shutdown waits for its JetStream thread: the reads still queued there
// are answered at once, not served one by one.
TEST(JetStreamChunkLog, ReadsStillQueuedWhenItStopsAreAnsweredNotServed) {
  ServerProcess server(ServerProcess::Kind::nats);
  config::NatsConfig config;
  config.url = server.nats_url();
  bus::NatsBus bus(config, "stopping-log");
  std::atomic<int> answered{0}, aborted{0};
  {
    bus::JetStream js(bus, JetStreamDurable::short_options(), false);
    ASSERT_TRUE(wait_until([&] { return js.ready(); }));
    bus::JetStreamChunkLog log(js);
    ASSERT_FALSE(append(log, "s1", "m1", "m1:1:0", {"a"}));
    for (int i = 0; i < 200; ++i)
      log.read("s1", {}, [&](boost::system::error_code ec, std::vector<std::string>) {
        aborted += ec == boost::asio::error::operation_aborted ? 1 : 0;
        ++answered;
      });
  }  // the log goes first, then the JetStream with reads still queued
  ASSERT_TRUE(wait_until([&] { return answered.load() == 200; }));
  EXPECT_GT(aborted.load(), 0) << "every queued read was served before the JetStream stopped";
}

TEST(MemoryChunkLog, OldEntriesLeaveByAgeAndSize) {
  boost::asio::io_context io;
  bus::MemoryChunkLog by_size(io.get_executor(), std::chrono::minutes(10), 10);
  by_size.append("s", "m", "e1", {"12345"});
  by_size.append("s", "m", "e2", {"67890"});
  by_size.append("s", "m", "e3", {"abc"});  // 13 bytes: e1 must go
  std::vector<std::string> got;
  by_size.read("s", "", [&](boost::system::error_code, std::vector<std::string> r) { got = std::move(r); });
  io.run();
  EXPECT_EQ(got, (std::vector<std::string>{"67890", "abc"}));

  io.restart();
  bus::MemoryChunkLog by_age(io.get_executor(), std::chrono::milliseconds(1), 1 << 20);
  by_age.append("s", "m", "e1", {"old"});
  std::this_thread::sleep_for(5ms);
  by_age.read("s", "", [&](boost::system::error_code, std::vector<std::string> r) { got = std::move(r); });
  io.run();
  EXPECT_TRUE(got.empty());
}

// A pod reads the log of every session whose first stream it opens, and most
// have nothing logged: such a read must not make (and delete) a consumer on the
// server. Counted on the JetStream API subjects, with a positive control.
TEST(JetStreamChunkLog, ASessionWithNothingLoggedIsReadWithoutAConsumer) {
  JetStreamDurable impl;
  auto& log = impl.log(0);
  natsConnection* raw_nc = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&raw_nc, impl.server().nats_url().c_str()), NATS_OK);
  bus::NatsConnectionPtr nc(raw_nc);
  std::atomic<int> consumer_calls{0};
  natsSubscription* raw_sub = nullptr;
  ASSERT_EQ(natsConnection_Subscribe(
                &raw_sub, nc.get(), "$JS.API.CONSUMER.>",
                [](natsConnection*, natsSubscription*, natsMsg* m, void* counter) {
                  static_cast<std::atomic<int>*>(counter)->fetch_add(1);
                  natsMsg_Destroy(m);
                },
                &consumer_calls),
            NATS_OK);
  bus::NatsSubscriptionPtr sub(raw_sub);
  ASSERT_EQ(natsConnection_Flush(nc.get()), NATS_OK);

  EXPECT_EQ(read(log, "nothing-logged"), std::vector<std::string>{});
  EXPECT_EQ(read(log, "nothing-logged", "m1"), std::vector<std::string>{});
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(consumer_calls.load(), 0);

  ASSERT_FALSE(append(log, "logged", "m1", "m1:1:0", {"a"}));
  EXPECT_EQ(read(log, "logged"), std::vector<std::string>{"a"});
  EXPECT_TRUE(wait_until([&] { return consumer_calls.load() > 0; }));
}

}  // namespace
}  // namespace chat::test
