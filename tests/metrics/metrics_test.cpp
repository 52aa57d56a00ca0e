#include "metrics/metrics.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace chat::metrics {
namespace {

TEST(Metrics, CountersAndGaugesRender) {
  Counter c;
  c.add();
  c.add(2);
  Gauge g;
  g.set(5);
  g.add(-2);
  Exposition e;
  e.counter("chat_things_total", "Things.", static_cast<double>(c.value()), {{"kind", "a"}});
  e.counter("chat_things_total", "Things.", 7, {{"kind", "b"}});
  e.gauge("chat_level", "A level.", static_cast<double>(g.value()));
  EXPECT_EQ(e.text(),
            "# HELP chat_things_total Things.\n"
            "# TYPE chat_things_total counter\n"
            "chat_things_total{kind=\"a\"} 3\n"
            "chat_things_total{kind=\"b\"} 7\n"
            "# HELP chat_level A level.\n"
            "# TYPE chat_level gauge\n"
            "chat_level 3\n");
}

TEST(Metrics, ValuesAreWrittenToTheirLastDigit) {
  Exposition e;
  e.gauge("process_start_time_seconds", "Start.", 1733270400.53);
  e.gauge("chat_ratio", "A ratio.", 0.00005);
  EXPECT_NE(e.text().find("process_start_time_seconds 1733270400.53\n"), std::string::npos) << e.text();
  EXPECT_NE(e.text().find("chat_ratio 5e-05\n"), std::string::npos) << e.text();
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInf) {
  static constexpr double kBounds[] = {0.1, 1};
  Histogram h{Buckets{kBounds}};
  h.observe(0.05);
  h.observe(0.5);
  h.observe(0.5);
  h.observe(3);
  Exposition e;
  e.histogram("chat_wait_seconds", "Waits.", h.snapshot());
  EXPECT_EQ(e.text(),
            "# HELP chat_wait_seconds Waits.\n"
            "# TYPE chat_wait_seconds histogram\n"
            "chat_wait_seconds_bucket{le=\"0.1\"} 1\n"
            "chat_wait_seconds_bucket{le=\"1\"} 3\n"
            "chat_wait_seconds_bucket{le=\"+Inf\"} 4\n"
            "chat_wait_seconds_sum 4.05\n"
            "chat_wait_seconds_count 4\n");
}

TEST(Metrics, SnapshotsAddUp) {
  Histogram a, b;
  a.observe(0.002);
  b.observe(0.2);
  auto s = a.snapshot();
  s += b.snapshot();
  EXPECT_EQ(s.count, 2u);
  EXPECT_NEAR(s.sum, 0.202, 1e-6);
}

TEST(Metrics, LabelValuesAreEscaped) {
  Exposition e;
  e.gauge("chat_x", "Help with \\ and\nnewline.", 1, {{"v", "a\"b\\c\nd"}});
  EXPECT_NE(e.text().find("chat_x{v=\"a\\\"b\\\\c\\nd\"} 1"), std::string::npos);
  EXPECT_NE(e.text().find("# HELP chat_x Help with \\\\ and\\nnewline."), std::string::npos);
}

TEST(Metrics, CountingFromManyThreadsLosesNothing) {
  Counter c;
  Histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.add();
        h.observe(0.003);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000u);
  EXPECT_EQ(h.snapshot().count, 40000u);
}

TEST(Metrics, TheRegistryRendersEveryCollector) {
  Registry r;
  r.add([](Exposition& e) { e.gauge("chat_a", "A.", 1); });
  r.add([](Exposition& e) { e.gauge("chat_b", "B.", 2); });
  auto text = r.render();
  EXPECT_NE(text.find("chat_a 1\n"), std::string::npos);
  EXPECT_NE(text.find("chat_b 2\n"), std::string::npos);
}

}  // namespace
}  // namespace chat::metrics
