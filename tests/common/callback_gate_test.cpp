#include "common/callback_gate.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <thread>

namespace chat {
namespace {

using namespace std::chrono_literals;

TEST(CallbackGate, AnAnswerRunsWhileTheGateIsOpenAndIsDroppedAfter) {
  CallbackGate gate;
  int got = 0;
  std::function<void(int)> answer = gate.guard([&](int v) { got += v; });
  answer(1);
  gate.close();
  answer(10);
  EXPECT_EQ(got, 1);
}

TEST(CallbackGate, OneAnswerMayRunInsideAnother) {
  CallbackGate gate;
  int inner_runs = 0;
  std::function<void()> inner = gate.guard([&] { ++inner_runs; });
  std::function<void()> outer = gate.guard([&] { inner(); });
  outer();
  EXPECT_EQ(inner_runs, 1);
}

TEST(CallbackGate, ClosingWaitsForAnAnswerInside) {
  CallbackGate gate;
  std::promise<void> entered, leave;
  auto leave_now = leave.get_future().share();
  bool finished = false;
  std::thread answering([&, answer = gate.guard([&] {
                          entered.set_value();
                          leave_now.wait();
                          finished = true;
                        })]() mutable { answer(); });
  entered.get_future().wait();
  auto closing = std::async(std::launch::async, [&] { gate.close(); });
  EXPECT_EQ(closing.wait_for(200ms), std::future_status::timeout) << "an answer is still inside";
  leave.set_value();
  closing.wait();
  EXPECT_TRUE(finished);
  answering.join();
}

}  // namespace
}  // namespace chat
