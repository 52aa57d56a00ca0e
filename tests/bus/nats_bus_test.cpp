// What only a networked bus can do: lose its server and get it back.

#include <gtest/gtest.h>

#include <future>
#include <mutex>

#include "bus/bus_test_support.hpp"
#include "bus/nats_bus.hpp"
#include "harness/server_process.hpp"

namespace chat::test {
namespace {

using namespace std::chrono_literals;

config::NatsConfig fast_reconnect(const std::string& url) {
  config::NatsConfig config;
  config.url = url;
  config.reconnect_wait = 100ms;
  return config;
}

// Publishes until the collector has one more message: after a reconnect, the
// other connection's subscriptions reach the server at a time we cannot see.
bool publish_until_received(bus::MessageBus& bus, const std::string& subject, Collector& got) {
  auto before = got.size();
  return eventually([&] {
    bus.publish(subject, "again");
    return got.wait_for(before + 1, 100ms);
  });
}

TEST(NatsBus, PublishAndRequestFailWithNotConnectedWhileServerIsDown) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus bus(fast_reconnect(server.nats_url()), "down-test");
  ASSERT_TRUE(eventually([&] { return bus.connected(); }));

  server.stop();
  ASSERT_TRUE(eventually([&] { return !bus.connected(); }));

  EXPECT_EQ(publish_and_wait(bus, "chat.pod.p1.response", "x"), boost::asio::error::not_connected);
  auto reply = request_and_wait(bus, "chat.pod.p1.health", "", 1s);
  EXPECT_EQ(reply.ec, boost::asio::error::not_connected);
}

TEST(NatsBus, ReconnectsToRestartedServerAndKeepsSubscriptions) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus publisher(fast_reconnect(server.nats_url()), "restart-pub");
  bus::NatsBus subscriber(fast_reconnect(server.nats_url()), "restart-sub");
  ASSERT_TRUE(eventually([&] { return publisher.connected() && subscriber.connected(); }));
  Collector got;
  auto sub = subscriber.subscribe("chat.pod.p1.response", {}, got.handler());
  auto queue_sub = subscriber.subscribe("chat.workflow.execute.*", "workflow-workers", got.handler());
  ASSERT_TRUE(sync(subscriber));
  ASSERT_TRUE(publish_until_received(publisher, "chat.pod.p1.response", got));

  server.stop();
  ASSERT_TRUE(eventually([&] { return !publisher.connected() && !subscriber.connected(); }));
  server.start();
  ASSERT_TRUE(eventually([&] { return publisher.connected() && subscriber.connected(); }));

  EXPECT_TRUE(publish_until_received(publisher, "chat.pod.p1.response", got));
  EXPECT_TRUE(publish_until_received(publisher, "chat.workflow.execute.s1", got));
  EXPECT_FALSE(publish_and_wait(publisher, "chat.pod.p1.response", "x"));
}

// Its reply was lost with the connection: the caller hears so when the server
// goes, not a minute later at the request's timeout.
TEST(NatsBus, ARequestWaitingForItsReplyEndsWhenTheServerIsLost) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus bus(fast_reconnect(server.nats_url()), "lost-test");
  ASSERT_TRUE(eventually([&] { return bus.connected(); }));
  Collector silent;
  auto sub = bus.subscribe("chat.pod.p1.health", {}, silent.handler());
  ASSERT_TRUE(sync(bus));
  std::promise<boost::system::error_code> done;
  bus.request("chat.pod.p1.health", "", 60s, [&](boost::system::error_code ec, std::string) { done.set_value(ec); });
  ASSERT_TRUE(silent.wait_for(1));

  server.stop();
  auto result = done.get_future();
  ASSERT_EQ(result.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(result.get(), boost::asio::error::connection_aborted) << "sent, so it may have arrived";
}

TEST(NatsBus, WhenConnectedWaitsForTheConnectionAtMostAsLongAsItIsTold) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus bus(fast_reconnect(server.nats_url()), "when-test");
  ASSERT_TRUE(eventually([&] { return bus.connected(); }));
  auto when_connected = [&](std::chrono::milliseconds within) {
    auto answer = std::make_shared<std::promise<bool>>();
    bus.when_connected(within, [answer](bool up) { answer->set_value(up); });
    return answer->get_future();
  };
  auto up = when_connected(0ms);
  ASSERT_EQ(up.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(up.get());

  server.stop();
  ASSERT_TRUE(eventually([&] { return !bus.connected(); }));
  auto down = when_connected(200ms);
  ASSERT_EQ(down.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(down.get());

  auto back = when_connected(20s);
  EXPECT_EQ(back.wait_for(300ms), std::future_status::timeout) << "answered before the server came back";
  server.start();
  ASSERT_EQ(back.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(back.get());
}

TEST(NatsBus, CountsItsReconnects) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus bus(fast_reconnect(server.nats_url()), "count-test");
  ASSERT_TRUE(eventually([&] { return bus.connected(); }));
  EXPECT_EQ(bus.status().reconnects, 0u);
  for (std::uint64_t round = 1; round <= 2; ++round) {
    server.stop();
    ASSERT_TRUE(eventually([&] { return !bus.connected(); }));
    server.start();
    ASSERT_TRUE(eventually([&] { return bus.connected(); }));
    EXPECT_EQ(bus.status().reconnects, round);
  }
}

TEST(NatsBus, StartsWithoutServerAndConnectsWhenItAppears) {
  auto port = free_port();
  bus::NatsBus bus(fast_reconnect("nats://127.0.0.1:" + std::to_string(port)), "late-test");
  EXPECT_FALSE(bus.connected());
  EXPECT_EQ(publish_and_wait(bus, "chat.pod.p1.response", "x"), boost::asio::error::not_connected);
  // Subscribing before the first connection is allowed; nats.c sends it later.
  Collector got;
  auto sub = bus.subscribe("chat.pod.p1.response", {}, got.handler());

  ServerProcess server(ServerProcess::Kind::nats, port);
  ASSERT_TRUE(eventually([&] { return bus.connected(); }));
  EXPECT_TRUE(publish_until_received(bus, "chat.pod.p1.response", got));
  EXPECT_EQ(got.items().back().subject, "chat.pod.p1.response");
}

TEST(NatsBus, AServerListIsSplitAtItsCommas) {
  EXPECT_EQ(bus::split_server_urls("nats://a:1"), (std::vector<std::string>{"nats://a:1"}));
  EXPECT_EQ(bus::split_server_urls("nats://a:1, nats://b:2 ,nats://c:3"),
            (std::vector<std::string>{"nats://a:1", "nats://b:2", "nats://c:3"}));
  EXPECT_THROW(bus::split_server_urls(" , "), std::invalid_argument);
}

TEST(NatsBus, ConnectsThroughAServerListWhoseFirstServerIsDown) {
  auto down = free_port();
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus bus(fast_reconnect("nats://127.0.0.1:" + std::to_string(down) + "," + server.nats_url()), "list-test");
  ASSERT_TRUE(eventually([&] { return bus.connected(); }));
  Collector got;
  auto sub = bus.subscribe("chat.pod.p1.response", {}, got.handler());
  ASSERT_TRUE(sync(bus));
  EXPECT_TRUE(publish_until_received(bus, "chat.pod.p1.response", got));
}

TEST(NatsBus, PendingRequestEndsWhenBusIsDestroyed) {
  ServerProcess server(ServerProcess::Kind::nats);
  std::promise<boost::system::error_code> done;
  {
    bus::NatsBus bus(fast_reconnect(server.nats_url()), "destroy-test");
    ASSERT_TRUE(eventually([&] { return bus.connected(); }));
    Collector silent;
    auto sub = bus.subscribe("chat.pod.p1.health", {}, silent.handler());
    bus.request("chat.pod.p1.health", "", 60s, [&](boost::system::error_code ec, std::string) { done.set_value(ec); });
    ASSERT_TRUE(silent.wait_for(1));
  }
  auto result = done.get_future();
  ASSERT_EQ(result.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(result.get(), boost::asio::error::operation_aborted);
}

TEST(NatsBus, SubscriptionMayOutliveTheBus) {
  ServerProcess server(ServerProcess::Kind::nats);
  auto bus = std::make_unique<bus::NatsBus>(fast_reconnect(server.nats_url()), "outlive-test");
  ASSERT_TRUE(eventually([&] { return bus->connected(); }));
  Collector got;
  auto sub = bus->subscribe("chat.pod.p1.response", {}, got.handler());
  ASSERT_TRUE(sync(*bus));
  bus->publish("chat.pod.p1.response", "x");
  ASSERT_TRUE(got.wait_for(1));

  bus.reset();
  sub.reset();
  EXPECT_EQ(got.size(), 1u);
}

// A handler may gather a burst: it learns whether nats.c holds more messages
// of its subscription behind the one it is given.
TEST(NatsBus, TellsAHandlerWhetherMoreMessagesWaitBehindTheOne) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus publisher(fast_reconnect(server.nats_url()), "more-pub");
  bus::NatsBus subscriber(fast_reconnect(server.nats_url()), "more-sub");
  ASSERT_TRUE(eventually([&] { return publisher.connected() && subscriber.connected(); }));
  std::mutex mutex;  // guards seen: the handler runs on nats.c's delivery thread
  std::vector<std::pair<std::string, bool>> seen;
  std::promise<void> release;
  auto released = release.get_future().share();
  auto count = [&] {
    std::lock_guard lock(mutex);
    return seen.size();
  };
  auto sub = subscriber.subscribe("chat.pod.p1.response", {}, [&](const bus::Message& m) {
    {
      std::lock_guard lock(mutex);
      seen.emplace_back(std::string(m.payload), m.more);
    }
    if (m.payload == "1") released.wait_for(10s);
  });
  ASSERT_TRUE(sync(subscriber));
  for (const char* p : {"1", "2", "3", "4", "5", "6"})
    ASSERT_FALSE(publish_and_wait(publisher, "chat.pod.p1.response", p));
  ASSERT_TRUE(eventually([&] { return count() == 1; }));
  // Round trips on both connections, in order behind the messages: once they
  // are back, messages 2 to 6 wait in the subscriber's queue.
  ASSERT_TRUE(sync(publisher));
  ASSERT_TRUE(sync(subscriber));
  release.set_value();
  ASSERT_TRUE(eventually([&] { return count() == 6; }));

  std::lock_guard lock(mutex);
  EXPECT_EQ(std::vector(seen.begin() + 1, seen.end()),
            (std::vector<std::pair<std::string, bool>>{{"2", true}, {"3", true}, {"4", true}, {"5", true}, {"6", false}}));
}

// nats.c holds 65,536 messages per subscription for its handler; more are dropped.
TEST(NatsBus, CountsASubscriptionTooSlowForItsMessages) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus publisher(fast_reconnect(server.nats_url()), "slow-pub");
  bus::NatsBus subscriber(fast_reconnect(server.nats_url()), "slow-sub");
  ASSERT_TRUE(eventually([&] { return publisher.connected() && subscriber.connected(); }));
  std::promise<void> release;
  auto released = release.get_future().share();
  auto sub = subscriber.subscribe("chat.pod.p1.response", {}, [&](const bus::Message&) { released.wait_for(20s); });
  ASSERT_TRUE(sync(subscriber));
  EXPECT_EQ(subscriber.status().slow_consumer, 0u);
  for (int i = 0; i < 70'000; ++i) publisher.publish("chat.pod.p1.response", "x");
  ASSERT_TRUE(sync(publisher));
  EXPECT_TRUE(eventually([&] { return subscriber.status().slow_consumer >= 1; }));
  release.set_value();
}

TEST(NatsBus, RejectsSubjectsThatWouldBreakTheProtocolLine) {
  ServerProcess server(ServerProcess::Kind::nats);
  bus::NatsBus bus(fast_reconnect(server.nats_url()), "subject-test");
  ASSERT_TRUE(eventually([&] { return bus.connected(); }));
  EXPECT_EQ(publish_and_wait(bus, "chat.pod p1.response", "x"), boost::asio::error::invalid_argument);
  EXPECT_EQ(publish_and_wait(bus, "", "x"), boost::asio::error::invalid_argument);
}

}  // namespace
}  // namespace chat::test
