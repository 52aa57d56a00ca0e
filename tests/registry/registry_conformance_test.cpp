// The SessionRegistry contract (registry/session_registry.hpp), run against
// every implementation: MemoryRegistry in-process, RedisRegistry against a
// real redis-server. ctest runs the Memory half as a unit test and the Redis
// half under label `redis`.

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <thread>

#include "common/identifier.hpp"
#include "harness/server_process.hpp"
#include "registry/memory_registry.hpp"
#include "registry/redis_registry.hpp"
#include "registry/registry_test_support.hpp"

namespace chat::test {
namespace {

namespace asio = boost::asio;

class MemoryImpl {
 public:
  static constexpr const char* kName = "Memory";

  MemoryImpl() : work_(asio::make_work_guard(io_)), registry_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~MemoryImpl() {
    work_.reset();
    thread_.join();
  }
  registry::SessionRegistry& registry() { return registry_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  registry::MemoryRegistry registry_;
  std::thread thread_;
};

// One redis-server per test, the contract's timings.
class RedisImpl {
 public:
  static constexpr const char* kName = "Redis";

  RedisImpl() : registry_(config()) { EXPECT_TRUE(eventually([&] { return registry_.connected(); })); }
  registry::SessionRegistry& registry() { return registry_; }

 private:
  config::RedisConfig config() const {
    config::RedisConfig c;
    c.host = server_.host();
    c.port = server_.port();
    return c;
  }

  ServerProcess server_{ServerProcess::Kind::redis};
  registry::RedisRegistry registry_;
};

template <class Impl>
class RegistryConformance : public ::testing::Test {
 protected:
  registry::SessionRegistry& registry() { return impl_.registry(); }
  // Unique ids keep tests apart even on a shared server.
  std::string id(std::string_view name) { return std::string(name) + "-" + suffix_; }
  registry::ConnectionRef conn(std::string_view session, std::string_view pod, std::string_view c) {
    return {id(session), id(pod), id(c)};
  }

  Impl impl_;
  std::string suffix_ = new_identifier("");
};

struct ImplName {
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

using Implementations = ::testing::Types<MemoryImpl, RedisImpl>;
TYPED_TEST_SUITE(RegistryConformance, Implementations, ImplName);

TYPED_TEST(RegistryConformance, IsConnected) { EXPECT_TRUE(this->registry().connected()); }

TYPED_TEST(RegistryConformance, UnknownSessionHasNoPods) {
  auto result = live_pods(this->registry(), this->id("nobody"));
  EXPECT_FALSE(result.ec);
  EXPECT_EQ(result.pods, Pods{});
}

TYPED_TEST(RegistryConformance, AddedConnectionMakesItsPodLive) {
  this->registry().add(this->conn("s", "pod1", "c1"));
  auto result = live_pods(this->registry(), this->id("s"));
  EXPECT_FALSE(result.ec) << result.ec.message();
  EXPECT_EQ(result.pods, Pods{this->id("pod1")});
  EXPECT_EQ(live_pods(this->registry(), this->id("other")).pods, Pods{});
}

TYPED_TEST(RegistryConformance, EachPodOnceAcrossConnectionsAndSessions) {
  auto& r = this->registry();
  r.add(this->conn("s", "pod1", "c1"));
  r.add(this->conn("s", "pod1", "c2"));
  r.add(this->conn("s", "pod2", "c3"));
  r.add(this->conn("t", "pod3", "c4"));
  r.add(this->conn("t", "pod1", "c5"));

  EXPECT_EQ(live_pods(r, this->id("s")).pods, (Pods{this->id("pod1"), this->id("pod2")}));
  EXPECT_EQ(live_pods(r, this->id("t")).pods, (Pods{this->id("pod1"), this->id("pod3")}));
}

TYPED_TEST(RegistryConformance, RemoveTakesEffectInCallOrder) {
  auto& r = this->registry();
  r.add(this->conn("s", "pod1", "c1"));
  r.add(this->conn("s", "pod1", "c2"));
  r.remove(this->conn("s", "pod1", "c1"));
  EXPECT_EQ(live_pods(r, this->id("s")).pods, Pods{this->id("pod1")});
  r.remove(this->conn("s", "pod1", "c2"));
  EXPECT_EQ(live_pods(r, this->id("s")).pods, Pods{});
  r.add(this->conn("s", "pod2", "c1"));
  r.remove(this->conn("s", "pod2", "c1"));
  r.add(this->conn("s", "pod2", "c1"));
  EXPECT_EQ(live_pods(r, this->id("s")).pods, Pods{this->id("pod2")});
}

TYPED_TEST(RegistryConformance, AddingTwiceOrRemovingAnUnknownConnectionChangesNothing) {
  auto& r = this->registry();
  r.add(this->conn("s", "pod1", "c1"));
  r.add(this->conn("s", "pod1", "c1"));
  r.remove(this->conn("s", "pod1", "c9"));
  r.remove(this->conn("s", "pod9", "c1"));
  EXPECT_EQ(live_pods(r, this->id("s")).pods, Pods{this->id("pod1")});
  r.remove(this->conn("s", "pod1", "c1"));
  EXPECT_EQ(live_pods(r, this->id("s")).pods, Pods{});
}

TYPED_TEST(RegistryConformance, RemovePodDropsOnlyThatPod) {
  auto& r = this->registry();
  r.add(this->conn("s", "pod1", "c1"));
  r.add(this->conn("s", "pod2", "c2"));
  r.add(this->conn("t", "pod1", "c3"));

  EXPECT_FALSE(remove_pod(r, this->id("pod1")));

  EXPECT_EQ(live_pods(r, this->id("s")).pods, Pods{this->id("pod2")});
  EXPECT_EQ(live_pods(r, this->id("t")).pods, Pods{});
}

TYPED_TEST(RegistryConformance, CallbacksDoNotRunOnTheCallersThread) {
  std::promise<std::thread::id> ran_on;
  this->registry().live_pods(this->id("s"), [&](boost::system::error_code, std::vector<std::string>) {
    ran_on.set_value(std::this_thread::get_id());
  });
  auto f = ran_on.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_NE(f.get(), std::this_thread::get_id());
}

}  // namespace
}  // namespace chat::test
