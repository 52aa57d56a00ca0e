// registry_bench: cost of the worker's per-session routing look-up,
// chat::registry::RedisRegistry::live_pods (SMEMBERS session:connections:{s},
// then MGET of every member's heartbeat key), against a running redis-server.
//
//   registry_bench --port P [--members N] [--pods K] [--seconds S] [--inflight C]
//
// Registers N connections of one session spread over K pods (the real keys,
// through RedisRegistry::add), then calls live_pods for S seconds with C calls
// in flight (each answer starts the next call), and prints ONE JSON line:
// look-ups per second and the latency of a look-up (call -> callback) in µs.
// Every wait is bounded; only 127.0.0.1. Built by bench/registry_bench.sh
// against the project's static libraries in build/ (not part of bench/CMakeLists.txt,
// which must stay free of project code).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include "config/config.hpp"
#include "registry/redis_registry.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Opts {
  int port = 6379;
  int members = 1;
  int pods = 2;
  double seconds = 5;
  int inflight = 1;
  std::string session = "bench_registry_session";
};

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Bench {
  Bench(chat::registry::RedisRegistry& r, Opts opts) : reg(r), o(std::move(opts)) {}
  chat::registry::RedisRegistry& reg;
  Opts o;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<double> lat_us;  // only touched on the registry thread, read after the end
  std::atomic<long> done{0}, errors{0}, wrong{0};
  std::atomic<bool> stop{false};
  std::atomic<int> active{0};
  Clock::time_point window_start, window_end;

  void call() {
    auto t0 = Clock::now();
    active.fetch_add(1);
    reg.live_pods(o.session, [this, t0](boost::system::error_code ec, std::vector<std::string> pods) {
      auto t1 = Clock::now();
      if (ec) errors.fetch_add(1);
      else if (static_cast<int>(pods.size()) != std::min(o.pods, o.members)) wrong.fetch_add(1);
      if (t0 >= window_start && t1 <= window_end) {
        lat_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        done.fetch_add(1);
      }
      bool again = !stop.load() && t1 < window_end;
      if (again) call();
      if (active.fetch_sub(1) == 1) {
        std::lock_guard l(mu);
        cv.notify_all();
      }
    });
  }
};

double pct(std::vector<double>& v, double p) {
  if (v.empty()) return -1;
  std::size_t i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--port") o.port = std::atoi(v.c_str());
    else if (k == "--members") o.members = std::max(1, std::atoi(v.c_str()));
    else if (k == "--pods") o.pods = std::max(1, std::atoi(v.c_str()));
    else if (k == "--seconds") o.seconds = std::max(0.1, std::atof(v.c_str()));
    else if (k == "--inflight") o.inflight = std::max(1, std::atoi(v.c_str()));
    else if (k == "--session") o.session = v;
    else {
      std::fprintf(stderr, "registry_bench: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  chat::config::RedisConfig cfg;
  cfg.host = "127.0.0.1";
  cfg.port = static_cast<std::uint16_t>(o.port);
  chat::registry::RedisRegistry reg(cfg);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!reg.connected() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!reg.connected()) {
    std::fprintf(stderr, "registry_bench: redis on 127.0.0.1:%d not reachable within 10 s\n", o.port);
    return 1;
  }
  for (int m = 0; m < o.members; ++m)
    reg.add({o.session, "pod-" + std::to_string(m % o.pods + 1), "conn_" + std::to_string(m)});

  // Wait (bounded) until the registrations are visible through live_pods itself.
  Bench b(reg, o);
  {
    bool ok = false;
    for (int tries = 0; tries < 100 && !ok; ++tries) {
      std::mutex m;
      std::condition_variable cv;
      bool answered = false;
      std::size_t n = 0;
      reg.live_pods(o.session, [&](boost::system::error_code ec, std::vector<std::string> pods) {
        std::lock_guard l(m);
        n = ec ? 0 : pods.size();
        answered = true;
        cv.notify_all();
      });
      std::unique_lock l(m);
      cv.wait_for(l, std::chrono::seconds(3), [&] { return answered; });
      ok = answered && static_cast<int>(n) == std::min(o.pods, o.members);
      if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!ok) {
      std::fprintf(stderr, "registry_bench: registrations not visible\n");
      return 1;
    }
  }

  // 0.5 s warm-up, then the measured window.
  auto start = Clock::now();
  b.window_start = start + std::chrono::milliseconds(500);
  b.window_end = b.window_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  b.lat_us.reserve(1 << 20);
  std::this_thread::sleep_until(start);
  for (int i = 0; i < o.inflight; ++i) b.call();
  std::this_thread::sleep_until(b.window_start);
  double cpu0 = cpu_seconds();
  std::this_thread::sleep_until(b.window_end);
  double cpu1 = cpu_seconds();
  b.stop.store(true);
  {
    std::unique_lock l(b.mu);
    b.cv.wait_for(l, std::chrono::seconds(5), [&] { return b.active.load() == 0; });
  }
  if (b.active.load() != 0) {
    std::fprintf(stderr, "registry_bench: %d look-ups unanswered 5 s after the end\n", b.active.load());
    return 1;
  }
  std::vector<double> lat = b.lat_us;
  std::sort(lat.begin(), lat.end());
  double mean = 0;
  for (double x : lat) mean += x;
  if (!lat.empty()) mean /= static_cast<double>(lat.size());
  double rate = static_cast<double>(b.done.load()) / o.seconds;
  std::printf(
      "{\"members\":%d,\"pods\":%d,\"inflight\":%d,\"seconds\":%.1f,\"lookups\":%ld,\"lookups_per_sec\":%.1f,"
      "\"us_per_lookup_wall\":%.2f,\"latency_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
      "\"client_cpu_us_per_lookup\":%.2f,\"errors\":%ld,\"wrong_answers\":%ld}\n",
      o.members, o.pods, o.inflight, o.seconds, b.done.load(), rate, rate > 0 ? 1e6 / rate : -1.0, mean,
      pct(lat, 50), pct(lat, 99), lat.empty() ? -1.0 : lat.back(),
      b.done.load() ? (cpu1 - cpu0) * 1e6 / static_cast<double>(b.done.load()) : -1.0, b.errors.load(),
      b.wrong.load());
  for (int m = 0; m < o.members; ++m)
    reg.remove({o.session, "pod-" + std::to_string(m % o.pods + 1), "conn_" + std::to_string(m)});
  return 0;
}
