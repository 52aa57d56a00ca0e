// ChunkRouter: where a session's chunks go, cached for a short while, with one
// registry look-up shared by everyone who asks at the same time.

#include "worker/chunk_router.hpp"

#include <boost/asio/error.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "protocol/subjects.hpp"

namespace chat::worker {
namespace {

using namespace std::chrono_literals;
using Subjects = ChunkRouter::Subjects;

constexpr auto kLongTtl = std::chrono::hours(1);

// A registry that counts look-ups and answers only when the test says so.
class HeldRegistry final : public registry::SessionRegistry {
 public:
  void add(const registry::ConnectionRef&) override {}
  void remove(const registry::ConnectionRef&) override {}
  void remove_pod(const std::string&, registry::DoneCallback done) override {
    if (done) done({});
  }
  void live_pods(const std::string& session_id, registry::PodsCallback done) override {
    std::lock_guard lock(mutex_);
    ++lookups_;
    pending_.emplace_back(session_id, std::move(done));
  }
  ComponentStatus status() const override { return {"held", true, true}; }

  int lookups() {
    std::lock_guard lock(mutex_);
    return lookups_;
  }
  // Answers the oldest open look-up; false when none is open.
  bool answer(std::vector<std::string> pods, boost::system::error_code ec = {}) {
    registry::PodsCallback done;
    {
      std::lock_guard lock(mutex_);
      if (pending_.empty()) return false;
      done = std::move(pending_.front().second);
      pending_.erase(pending_.begin());
    }
    done(ec, std::move(pods));
    return true;
  }

 private:
  std::mutex mutex_;  // guards everything below: resolves may come from several threads
  int lookups_ = 0;
  std::vector<std::pair<std::string, registry::PodsCallback>> pending_;
};

// What a resolve answered, if it has.
struct Answer {
  std::optional<Subjects> subjects;
  ChunkRouter::RouteCallback callback() {
    return [this](ChunkRouter::SubjectsPtr s) { subjects = *s; };
  }
};

std::string pod(const std::string& id) { return subjects::pod_response(id); }

// Resolves once and answers with `pods`, so the route is cached.
void prime(ChunkRouter& router, HeldRegistry& registry, const std::string& session, std::vector<std::string> pods) {
  Answer a;
  router.resolve(session, a.callback());
  ASSERT_TRUE(registry.answer(std::move(pods)));
  ASSERT_TRUE(a.subjects);
}

TEST(ChunkRouter, ResolveRoutesToTheResponseSubjectOfEachLivePod) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  Answer a;
  router.resolve("s1", a.callback());
  EXPECT_FALSE(a.subjects);  // waits for the registry
  ASSERT_TRUE(registry.answer({"pod-a", "pod-b"}));
  ASSERT_TRUE(a.subjects);
  EXPECT_EQ(*a.subjects, (Subjects{pod("pod-a"), pod("pod-b")}));
}

TEST(ChunkRouter, ASessionWithoutLivePodsRoutesToItsBroadcastSubject) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  Answer a;
  router.resolve("s1", a.callback());
  ASSERT_TRUE(registry.answer({}));
  ASSERT_TRUE(a.subjects);
  EXPECT_EQ(*a.subjects, (Subjects{subjects::broadcast("s1")}));
}

TEST(ChunkRouter, ARegistryErrorFallsBackToTheBroadcastSubject) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  Answer a;
  router.resolve("s1", a.callback());
  ASSERT_TRUE(registry.answer({"pod-a"}, boost::asio::error::not_connected));
  ASSERT_TRUE(a.subjects);
  EXPECT_EQ(*a.subjects, (Subjects{subjects::broadcast("s1")}));
}

TEST(ChunkRouter, NothingIsCachedBeforeTheFirstAnswer) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  EXPECT_EQ(router.cached("s1"), nullptr);
  Answer a;
  router.resolve("s1", a.callback());
  EXPECT_EQ(router.cached("s1"), nullptr);  // asked, not answered yet
}

TEST(ChunkRouter, AnAnswerIsServedFromTheCacheWithinTheTtl) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  prime(router, registry, "s1", {"pod-a"});

  auto cached = router.cached("s1");
  ASSERT_NE(cached, nullptr);
  EXPECT_EQ(*cached, (Subjects{pod("pod-a")}));
  Answer again;
  router.resolve("s1", again.callback());
  ASSERT_TRUE(again.subjects);  // answered at once, without the registry
  EXPECT_EQ(*again.subjects, (Subjects{pod("pod-a")}));
  EXPECT_EQ(registry.lookups(), 1);
}

TEST(ChunkRouter, AnAnswerOlderThanTheTtlIsLookedUpAgain) {
  HeldRegistry registry;
  ChunkRouter router(registry, 50ms);
  prime(router, registry, "s1", {"pod-a"});

  auto until = std::chrono::steady_clock::now() + 10s;
  while (router.cached("s1") && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(router.cached("s1"), nullptr);
  Answer a;
  router.resolve("s1", a.callback());
  EXPECT_EQ(registry.lookups(), 2);
  ASSERT_TRUE(registry.answer({"pod-b"}));
  ASSERT_TRUE(a.subjects);
  EXPECT_EQ(*a.subjects, (Subjects{pod("pod-b")}));
}

TEST(ChunkRouter, ConcurrentResolvesOfASessionShareOneLookUp) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  constexpr int kThreads = 4;
  std::vector<Answer> answers(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&router, &a = answers[i]] { router.resolve("s1", a.callback()); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(registry.lookups(), 1);

  ASSERT_TRUE(registry.answer({"pod-a"}));
  for (auto& a : answers) {
    ASSERT_TRUE(a.subjects);
    EXPECT_EQ(*a.subjects, (Subjects{pod("pod-a")}));
  }
}

TEST(ChunkRouter, EachSessionHasItsOwnLookUp) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  Answer a1, a2;
  router.resolve("s1", a1.callback());
  router.resolve("s2", a2.callback());
  EXPECT_EQ(registry.lookups(), 2);
  ASSERT_TRUE(registry.answer({"pod-a"}));
  ASSERT_TRUE(registry.answer({}));
  EXPECT_EQ(*a1.subjects, (Subjects{pod("pod-a")}));
  EXPECT_EQ(*a2.subjects, (Subjects{subjects::broadcast("s2")}));
}

TEST(ChunkRouter, ForgetForcesAFreshLookUp) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  prime(router, registry, "s1", {"pod-a"});

  router.forget("s1");
  EXPECT_EQ(router.cached("s1"), nullptr);
  Answer a;
  router.resolve("s1", a.callback());
  EXPECT_EQ(registry.lookups(), 2);
  ASSERT_TRUE(registry.answer({"pod-b"}));
  ASSERT_TRUE(a.subjects);
  EXPECT_EQ(*a.subjects, (Subjects{pod("pod-b")}));
}

TEST(ChunkRouter, ForgetDuringALookUpStillAnswersItsWaiters) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  Answer a;
  router.resolve("s1", a.callback());
  router.forget("s1");  // a new reply starts while the previous one's look-up is out
  ASSERT_TRUE(registry.answer({"pod-a"}));
  ASSERT_TRUE(a.subjects);
  EXPECT_EQ(*a.subjects, (Subjects{pod("pod-a")}));
}

TEST(ChunkRouter, AddPodReplacesTheBroadcastPlaceholderWithThePodSubject) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  prime(router, registry, "s1", {});

  router.add_pod("s1", "pod-late");
  auto cached = router.cached("s1");
  ASSERT_NE(cached, nullptr);
  EXPECT_EQ(*cached, (Subjects{pod("pod-late")}));
  EXPECT_EQ(registry.lookups(), 1);
}

TEST(ChunkRouter, AddPodAppendsToTheLivePodsOnce) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  prime(router, registry, "s1", {"pod-a"});

  router.add_pod("s1", "pod-b");
  router.add_pod("s1", "pod-b");
  router.add_pod("s1", "pod-a");
  auto cached = router.cached("s1");
  ASSERT_NE(cached, nullptr);
  EXPECT_EQ(*cached, (Subjects{pod("pod-a"), pod("pod-b")}));
}

TEST(ChunkRouter, AddPodLeavesOtherSessionsAlone) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  prime(router, registry, "s1", {"pod-a"});
  prime(router, registry, "s2", {"pod-a"});

  router.add_pod("s1", "pod-b");
  ASSERT_NE(router.cached("s2"), nullptr);
  EXPECT_EQ(*router.cached("s2"), (Subjects{pod("pod-a")}));
}

TEST(ChunkRouter, AddPodWithoutACachedRouteLeavesTheRouteToTheRegistry) {
  HeldRegistry registry;
  ChunkRouter router(registry, kLongTtl);
  router.add_pod("s1", "pod-late");
  EXPECT_EQ(router.cached("s1"), nullptr);
  Answer a;
  router.resolve("s1", a.callback());
  EXPECT_EQ(registry.lookups(), 1);
  ASSERT_TRUE(registry.answer({"pod-late"}));
  EXPECT_EQ(*a.subjects, (Subjects{pod("pod-late")}));
}

TEST(ChunkRouter, AnAnswerThatArrivesAfterTheRouterIsGoneIsHarmless) {
  HeldRegistry registry;
  Answer a;
  {
    ChunkRouter router(registry, kLongTtl);
    router.resolve("s1", a.callback());
  }
  ASSERT_TRUE(registry.answer({"pod-a"}));
  ASSERT_TRUE(a.subjects);
  EXPECT_EQ(*a.subjects, (Subjects{pod("pod-a")}));
}

}  // namespace
}  // namespace chat::worker
