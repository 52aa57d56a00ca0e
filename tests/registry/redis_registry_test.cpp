// What only the Redis registry has: the exact keys other programs read,
// heartbeats that expire, AUTH/SELECT, and outages.

#include <gtest/gtest.h>

#include <ctime>
#include <future>
#include <thread>

#include "harness/delay_proxy.hpp"
#include "harness/server_process.hpp"
#include "registry/redis_registry.hpp"
#include "registry/registry_test_support.hpp"

namespace chat::test {
namespace {

using namespace std::chrono_literals;
using registry::ConnectionRef;
using registry::RedisRegistry;

config::RedisConfig redis_config(const ServerProcess& server, std::string password = {}, unsigned db = 0) {
  config::RedisConfig c;
  c.host = server.host();
  c.port = server.port();
  c.password = std::move(password);
  c.db = db;
  return c;
}

RedisRegistry::Timing fast_reconnect() {
  RedisRegistry::Timing t;
  t.connection.reconnect_min = 50ms;
  t.connection.reconnect_max = 200ms;
  return t;
}

// live_pods is queued behind earlier writes on the same connection, so once
// it answers, those writes are in Redis.
void settle(RedisRegistry& r) { ASSERT_FALSE(live_pods(r, "settle").ec); }

class RedisRegistryTest : public ::testing::Test {
 protected:
  // A registry that has finished its first connection.
  std::unique_ptr<RedisRegistry> connect(RedisRegistry::Timing timing = fast_reconnect()) {
    auto r = std::make_unique<RedisRegistry>(redis_config(server_), timing);
    EXPECT_TRUE(eventually([&] { return r->connected(); }));
    return r;
  }
  // Streams c1 (on pod-1) and c2 (on pod-2) of session s1, written.
  std::unique_ptr<RedisRegistry> two_streams_of_s1() {
    auto r = connect();
    r->add({"s1", "pod-1", "c1"});
    r->add({"s1", "pod-2", "c2"});
    settle(*r);
    return r;
  }

  ServerProcess server_{ServerProcess::Kind::redis};
  RawRedis raw_{server_.port()};
};

TEST_F(RedisRegistryTest, WritesExactlyTheSpecKeys) {
  auto owner = connect();
  auto& r = *owner;
  r.add({"sess_1", "pod-1", "conn_a"});
  settle(r);

  EXPECT_EQ(raw_.sorted({"KEYS", "*"}),
            (std::vector<std::string>{"heartbeat:pod-1:conn_a", "pod:connections:pod-1", "session:connections:sess_1"}));
  EXPECT_EQ(raw_.run({"SMEMBERS", "session:connections:sess_1"}), std::vector<std::string>{"pod-1:conn_a"});
  EXPECT_EQ(raw_.run({"HGETALL", "pod:connections:pod-1"}), (std::vector<std::string>{"conn_a", "sess_1"}));
  auto beat = std::stoll(raw_.run({"GET", "heartbeat:pod-1:conn_a"}).at(0));
  EXPECT_NEAR(static_cast<double>(beat), static_cast<double>(std::time(nullptr)), 5.0);
  EXPECT_GT(raw_.integer({"TTL", "session:connections:sess_1"}), 290);
  EXPECT_LE(raw_.integer({"TTL", "session:connections:sess_1"}), 300);
  EXPECT_GT(raw_.integer({"TTL", "pod:connections:pod-1"}), 290);
  EXPECT_LE(raw_.integer({"TTL", "pod:connections:pod-1"}), 300);
  EXPECT_GT(raw_.integer({"TTL", "heartbeat:pod-1:conn_a"}), 25);
  EXPECT_LE(raw_.integer({"TTL", "heartbeat:pod-1:conn_a"}), 30);

  r.remove({"sess_1", "pod-1", "conn_a"});
  settle(r);
  EXPECT_EQ(raw_.run({"KEYS", "*"}), std::vector<std::string>{});
}

TEST_F(RedisRegistryTest, RemovePodLeavesNoKeysOfThatPod) {
  auto owner = connect();
  auto& r = *owner;
  r.add({"s1", "pod-1", "c1"});
  r.add({"s2", "pod-1", "c2"});
  r.add({"s1", "pod-2", "c3"});
  settle(r);
  // An entry of an earlier run of pod-1 that this process does not know.
  raw_.run({"HSET", "pod:connections:pod-1", "old", "s3"});
  raw_.run({"SADD", "session:connections:s3", "pod-1:old"});

  ASSERT_FALSE(remove_pod(r, "pod-1"));

  EXPECT_EQ(raw_.sorted({"KEYS", "*"}),
            (std::vector<std::string>{"heartbeat:pod-2:c3", "pod:connections:pod-2", "session:connections:s1"}));
  EXPECT_EQ(raw_.run({"SMEMBERS", "session:connections:s1"}), std::vector<std::string>{"pod-2:c3"});
}

TEST_F(RedisRegistryTest, ExpiredHeartbeatMeansDeadAndTheMemberIsDropped) {
  auto timing = fast_reconnect();
  timing.heartbeat_ttl = 1s;
  timing.renew_interval = 1h;
  auto owner = connect(timing);
  auto& r = *owner;
  r.add({"s1", "pod-1", "c1"});
  ASSERT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});

  ASSERT_TRUE(eventually([&] { return raw_.integer({"EXISTS", "heartbeat:pod-1:c1"}) == 0; }, 5s));
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{});
  settle(r);
  EXPECT_EQ(raw_.integer({"SISMEMBER", "session:connections:s1", "pod-1:c1"}), 0);
}

TEST_F(RedisRegistryTest, RenewalKeepsLiveConnectionsAndRepairsMembership) {
  auto timing = fast_reconnect();
  timing.heartbeat_ttl = 2s;
  timing.membership_ttl = 3s;
  timing.renew_interval = 250ms;
  auto owner = connect(timing);
  auto& r = *owner;
  r.add({"s1", "pod-1", "c1"});
  settle(r);
  auto beat = [&]() -> long long {
    auto v = raw_.run({"GET", "heartbeat:pod-1:c1"});
    return v.empty() ? -1 : std::stoll(v.at(0));
  };
  const long long first = beat();
  ASSERT_GT(first, 0);

  // The heartbeat's value is the time of its last renewal: once it is 4 s past
  // the first one, both TTLs (2 s, 3 s) have run out several times over, and
  // only renewals can have kept the keys. Waited for, never slept: a slow
  // machine only makes this take longer.
  ASSERT_TRUE(eventually([&] { return beat() >= first + 4; }, 30s)) << "heartbeat never renewed past its TTL";
  EXPECT_TRUE(eventually([&] { return raw_.integer({"SISMEMBER", "session:connections:s1", "pod-1:c1"}) == 1; }));
  EXPECT_TRUE(eventually([&] { return raw_.run({"HGET", "pod:connections:pod-1", "c1"}) == std::vector<std::string>{"s1"}; }));
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});
  // Renewed, not made persistent: the TTLs are still the configured ones.
  for (const char* key : {"session:connections:s1", "pod:connections:pod-1", "heartbeat:pod-1:c1"}) {
    auto pttl = raw_.integer({"PTTL", key});
    EXPECT_GT(pttl, 0) << key;
    EXPECT_LE(pttl, 3000) << key;
  }

  // A worker dropped the member (it thought the heartbeat had expired).
  raw_.run({"SREM", "session:connections:s1", "pod-1:c1"});
  EXPECT_TRUE(eventually([&] { return raw_.integer({"SISMEMBER", "session:connections:s1", "pod-1:c1"}) == 1; }));
}

TEST_F(RedisRegistryTest, SkipsDeadAndMalformedMembersWrittenByOthers) {
  auto owner = connect();
  auto& r = *owner;
  r.add({"s1", "pod-1", "c1"});
  raw_.run({"SADD", "session:connections:s1", "pod-9:gone", "no-colon", "a:b:c", "pod-8:"});

  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});
  settle(r);
  EXPECT_EQ(raw_.integer({"SISMEMBER", "session:connections:s1", "pod-9:gone"}), 0);
}

TEST_F(RedisRegistryTest, PodIdsWithHyphensAndUnderscoresSplitAtLastColon) {
  auto owner = connect();
  auto& r = *owner;
  r.add({"s1", "chat-pod_7", "conn-1_x"});
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"chat-pod_7"});
}

TEST_F(RedisRegistryTest, RejectsIdentifiersThatWouldBreakKeys) {
  auto owner = connect();
  auto& r = *owner;
  r.add({"s1", "pod:1", "c1"});
  r.add({"s*", "pod-1", "c1"});
  r.add({"s1", "pod-1", ""});
  settle(r);
  EXPECT_EQ(raw_.run({"KEYS", "*"}), std::vector<std::string>{});
  EXPECT_EQ(live_pods(r, "s 1").ec, boost::asio::error::invalid_argument);
  EXPECT_EQ(remove_pod(r, "pod.1"), boost::asio::error::invalid_argument);
}

TEST_F(RedisRegistryTest, AuthenticatesAndSelectsTheDatabase) {
  ServerProcess secured(ServerProcess::Kind::redis, 0, {"--requirepass", "s3cret"});
  RedisRegistry r(redis_config(secured, "s3cret", 3));
  ASSERT_TRUE(eventually([&] { return r.connected(); }));
  r.add({"s1", "pod-1", "c1"});
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});

  RawRedis db3(secured.port(), "s3cret", 3);
  RawRedis db0(secured.port(), "s3cret", 0);
  EXPECT_EQ(db3.run({"KEYS", "*"}).size(), 3u);
  EXPECT_EQ(db0.run({"KEYS", "*"}), std::vector<std::string>{});
}

TEST_F(RedisRegistryTest, WrongPasswordIsAnOutageNotACrash) {
  ServerProcess secured(ServerProcess::Kind::redis, 0, {"--requirepass", "s3cret"});
  RedisRegistry r(redis_config(secured, "wrong"), fast_reconnect());
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(r.connected());
  EXPECT_EQ(live_pods(r, "s1").ec, boost::asio::error::not_connected);
}

TEST_F(RedisRegistryTest, ServerDownFailsReadsAndRestartRestoresRegistrations) {
  auto owner = two_streams_of_s1();
  auto& r = *owner;

  server_.stop();
  ASSERT_TRUE(eventually([&] { return !r.connected(); }));
  EXPECT_EQ(live_pods(r, "s1").ec, boost::asio::error::not_connected);
  r.remove({"s1", "pod-2", "c2"});
  r.add({"s2", "pod-1", "c3"});

  server_.start();  // empty: the test server keeps nothing on disk
  ASSERT_TRUE(eventually([&] { return r.connected(); }));
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});
  EXPECT_EQ(live_pods(r, "s2").pods, Pods{"pod-1"});
  RawRedis fresh(server_.port());
  EXPECT_EQ(fresh.sorted({"KEYS", "*"}),
            (std::vector<std::string>{"heartbeat:pod-1:c1", "heartbeat:pod-1:c3", "pod:connections:pod-1",
                                      "session:connections:s1", "session:connections:s2"}));
}

TEST_F(RedisRegistryTest, RemovalsMadeDuringAnOutageAreAppliedAfterIt) {
  auto owner = two_streams_of_s1();
  auto& r = *owner;

  // An outage with the data kept: lock the registry out and drop its connection.
  raw_.run({"CONFIG", "SET", "requirepass", "lockout"});
  raw_.run({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
  ASSERT_TRUE(eventually([&] { return !r.connected(); }));
  r.remove({"s1", "pod-2", "c2"});
  EXPECT_EQ(remove_pod(r, "pod-3"), boost::asio::error::not_connected);

  raw_.run({"CONFIG", "SET", "requirepass", ""});
  ASSERT_TRUE(eventually([&] { return r.connected(); }));
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});
  EXPECT_EQ(raw_.integer({"EXISTS", "heartbeat:pod-2:c2"}), 0);
  EXPECT_EQ(raw_.run({"SMEMBERS", "session:connections:s1"}), std::vector<std::string>{"pod-1:c1"});
}

// A removal on its way when the connection drops (a stuck server given up
// on, a restart) is sent again once the connection is back.
TEST_F(RedisRegistryTest, ARemovalInFlightWhenTheConnectionDropsIsAppliedAfterIt) {
  auto owner = two_streams_of_s1();
  auto& r = *owner;
  // Writes wait: the removal's transaction goes out and stays unanswered.
  raw_.run({"CLIENT", "PAUSE", "3000", "WRITE"});
  r.remove({"s1", "pod-2", "c2"});
  std::this_thread::sleep_for(300ms);
  raw_.run({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
  raw_.run({"CLIENT", "UNPAUSE"});
  ASSERT_TRUE(eventually([&] { return r.connected(); }));
  EXPECT_TRUE(eventually([&] {
    return raw_.run({"SMEMBERS", "session:connections:s1"}) == std::vector<std::string>{"pod-1:c1"};
  })) << "the removal lost with the connection";
  EXPECT_EQ(raw_.integer({"EXISTS", "heartbeat:pod-2:c2"}), 0);
  EXPECT_EQ(raw_.integer({"HEXISTS", "pod:connections:pod-2", "c2"}), 0);
}

// A worker renews nothing, yet must notice a server that stopped answering
// while its TCP connection stays up: every route lookup would wait it out.
TEST_F(RedisRegistryTest, AServerThatStopsAnsweringIsLeftAlsoWithNothingToRenew) {
  auto timing = fast_reconnect();
  timing.renew_interval = 400ms;
  auto owner = connect(timing);
  auto& r = *owner;
  raw_.run({"CLIENT", "PAUSE", "3000", "ALL"});
  EXPECT_TRUE(eventually([&] { return !r.connected(); })) << "still taken for connected while nothing answers";
  EXPECT_TRUE(eventually([&] { return r.connected(); })) << "back once the server answers again";
}

// Redis a round trip of 0.3 s away, renewals due every 25 ms (a 400 ms
// interval in 16 slices): each slice goes out on time, so every heartbeat is
// renewed well within its TTL. Waiting for each slice's answer before sending
// the next made a round 16 round trips long (5 s here, past the 2 s TTL).
TEST_F(RedisRegistryTest, HeartbeatsOfARedisFarAwayAreRenewedWithinTheirTtl) {
  DelayProxy far(server_.port(), 150ms);
  auto timing = fast_reconnect();
  timing.heartbeat_ttl = 2s;
  timing.membership_ttl = 3s;
  timing.renew_interval = 400ms;
  auto config = redis_config(server_);
  config.port = far.port();
  RedisRegistry r(config, timing);
  ASSERT_TRUE(eventually([&] { return r.connected(); }));
  constexpr int kConnections = 32;
  auto heartbeat = [](int i) { return "heartbeat:pod-1:c" + std::to_string(i); };
  for (int i = 0; i < kConnections; ++i) r.add({"s1", "pod-1", "c" + std::to_string(i)});
  settle(r);

  // Read directly, not through the relay, for two TTLs.
  for (const auto until = std::chrono::steady_clock::now() + 4s; std::chrono::steady_clock::now() < until;) {
    long long alive = 0;
    for (int i = 0; i < kConnections; ++i) alive += raw_.integer({"EXISTS", heartbeat(i)});
    ASSERT_EQ(alive, kConnections) << "a heartbeat expired while its pod was renewing it";
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(r.connected()) << "a round trip shorter than the interval is no outage";
}

TEST(RedisRegistry, StartsWithoutServerAndConnectsWhenItAppears) {
  auto port = free_port();
  config::RedisConfig c;
  c.host = "127.0.0.1";
  c.port = port;
  RedisRegistry r(c, fast_reconnect());
  r.add({"s1", "pod-1", "c1"});
  EXPECT_FALSE(r.connected());
  EXPECT_EQ(live_pods(r, "s1").ec, boost::asio::error::not_connected);

  ServerProcess server(ServerProcess::Kind::redis, port);
  ASSERT_TRUE(eventually([&] { return r.connected(); }));
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});
}

// The name is resolved by the connection (asio's resolver thread), not by
// hiredis on the registry's strand; the address it finds is what hiredis dials.
TEST_F(RedisRegistryTest, ConnectsToAHostGivenByName) {
  auto c = redis_config(server_);
  c.host = "localhost";
  RedisRegistry r(c, fast_reconnect());
  ASSERT_TRUE(eventually([&] { return r.connected(); }));
  r.add({"s1", "pod-1", "c1"});
  EXPECT_EQ(live_pods(r, "s1").pods, Pods{"pod-1"});
}

TEST(RedisRegistry, AHostNameThatDoesNotResolveIsAnOutageNotACrash) {
  config::RedisConfig c;
  c.host = "chat-registry-test.invalid";  // RFC 6761: never resolves
  c.port = 6379;
  RedisRegistry r(c, fast_reconnect());
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(r.connected());
  EXPECT_EQ(live_pods(r, "s1").ec, boost::asio::error::not_connected);
}

// A renewal whose timer had fired but whose handler had not run yet when the
// registry was destroyed used to re-arm the timer after the destructor's cancel,
// so the registry's thread never ran out of work and the destructor never
// returned (a pod hung on SIGTERM). Renewals every millisecond make that
// moment common.
TEST_F(RedisRegistryTest, DestructionFinishesWhileRenewalsAreDue) {
  auto timing = fast_reconnect();
  timing.renew_interval = 16ms;  // one slice a millisecond
  for (int round = 0; round < 200; ++round) {
    auto r = connect(timing);
    r->add({"s1", "pod-1", "c" + std::to_string(round)});
    std::this_thread::sleep_for(std::chrono::microseconds{round * 37 % 2000});
    auto destroyed = std::make_shared<std::promise<void>>();
    auto done = destroyed->get_future();
    std::thread destroyer([destroyed, r = std::move(r)]() mutable {
      r.reset();
      destroyed->set_value();
    });
    if (done.wait_for(10s) != std::future_status::ready) {
      destroyer.detach();  // stuck for good: leave it to the process's exit
      FAIL() << "the registry's destructor did not return (round " << round << ")";
    }
    destroyer.join();
  }
}

TEST(RedisRegistry, DefaultTimingIsTheSpec) {
  RedisRegistry::Timing t;
  EXPECT_EQ(t.heartbeat_ttl, 30s);
  EXPECT_EQ(t.membership_ttl, 300s);
  EXPECT_EQ(t.renew_interval, 10s);
}

}  // namespace
}  // namespace chat::test
