#include "buffer/recent_ids.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace chat::buffer {
namespace {

using namespace std::chrono_literals;
using Gone = std::vector<std::pair<std::string, int>>;

TEST(RecentIds, TheBoundPushesOutTheOldestAndSaysWhichUnlessItWasTaken) {
  const SteadyTime t0 = std::chrono::steady_clock::now();
  RecentIds<int> ids(2);
  Gone gone;
  auto note = [&](const std::string& id, int v) { gone.emplace_back(id, v); };
  ids.remember("a", t0, 1, note);
  ids.remember("b", t0, 2, note);
  EXPECT_TRUE(gone.empty());
  ids.remember("c", t0, 3, note);
  EXPECT_EQ(gone, (Gone{{"a", 1}}));
  EXPECT_FALSE(ids.contains("a"));
  EXPECT_EQ(ids.take("b"), 2);
  ids.remember("d", t0, 4, note);
  EXPECT_EQ(gone, (Gone{{"a", 1}})) << "b was taken: it holds no place";
  EXPECT_TRUE(ids.contains("c"));
  EXPECT_TRUE(ids.contains("d"));
  ids.remember("e", t0, 5, note);
  EXPECT_EQ(gone, (Gone{{"a", 1}, {"c", 3}})) << "the oldest held goes; b's old place reports nothing";
}

TEST(RecentIds, ForgettingByAgeSaysWhichWentUnlessTaken) {
  const SteadyTime t0 = std::chrono::steady_clock::now();
  RecentIds<int> ids(10);
  ids.remember("a", t0, 1);
  ids.remember("b", t0 + 1s, 2);
  ids.remember("c", t0 + 2s, 3);
  ids.take("a");
  Gone gone;
  ids.forget_before(t0 + 1s, [&](const std::string& id, int v) { gone.emplace_back(id, v); });
  EXPECT_EQ(gone, (Gone{{"b", 2}}));
  EXPECT_TRUE(ids.contains("c"));
}

}  // namespace
}  // namespace chat::buffer
