#pragma once
// Small helpers of the load generator: clocks, RFC 3339 parsing, a top-level JSON
// member scanner, latency samples and a JSON line writer. No project code is used:
// the bench measures chatd from outside, as any client would.

#include <cstdint>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lg {

inline std::int64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline std::int64_t real_us() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

// "2026-11-27T00:30:15.123456Z" (or a numeric offset, any fraction length) to
// microseconds since the Unix epoch. nullopt when the text is not such a timestamp.
std::optional<std::int64_t> parse_rfc3339_us(std::string_view s);

// The raw value of the top-level member `key` of the JSON object `obj`: for a
// string the characters between the quotes (escapes left as they are), for any
// other value its literal text. Nested objects are skipped, so a key inside them
// (or inside a string) never matches. nullopt when absent or the text is malformed.
std::optional<std::string_view> json_member(std::string_view obj, std::string_view key);

std::optional<std::int64_t> to_int(std::string_view s);

// Latency samples in microseconds, exact percentiles (nearest rank). Negative
// samples are kept as they are (and counted): they say the clocks disagree.
class Samples {
 public:
  void add(std::int64_t us);
  void merge(const Samples& other);
  std::size_t size() const { return v_.size(); }
  std::uint64_t dropped() const { return dropped_; }
  std::uint64_t negative() const { return negative_; }
  // p in [0,100]; NaN (JSON null) when empty: no sample is not a latency of 0.
  // Sorts on first use after an add.
  double percentile_ms(double p);
  double min_ms() { return percentile_ms(0); }
  double max_ms() { return percentile_ms(100); }
  double mean_ms() const;

 private:
  static constexpr std::size_t kMax = 50'000'000;
  std::vector<std::int32_t> v_;
  bool sorted_ = true;
  std::uint64_t dropped_ = 0;
  std::uint64_t negative_ = 0;
  double sum_us_ = 0;
};

// Builds one JSON object: {"a":1,"b":"x",...}. Keys and string values must not
// need escaping beyond what esc() does (quotes, backslashes, control characters).
class JsonLine {
 public:
  JsonLine& num(std::string_view key, double v, int decimals = 3);
  JsonLine& integer(std::string_view key, std::int64_t v);
  JsonLine& str(std::string_view key, std::string_view v);
  JsonLine& boolean(std::string_view key, bool v);
  JsonLine& raw(std::string_view key, std::string_view json);
  std::string done() const { return s_ + "}"; }
  static std::string esc(std::string_view v);

 private:
  void key(std::string_view k);
  std::string s_ = "{";
};

// {"200":5,"503":1}: counts by HTTP status.
std::string status_json(const std::map<int, std::uint64_t>& m);
// A JSON array of strings.
std::string problems_json(const std::vector<std::string>& p);

// "loadgen: " + the message + a newline, on stderr.
void log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Sleeps until mono_ns() reaches t.
void sleep_until_ns(std::int64_t t);

// VmRSS of a process in KiB from /proc/PID/status; -1 when unreadable.
long read_vmrss_kib(int pid);
// utime+stime of a process in seconds from /proc/PID/stat; -1 when unreadable.
double read_cpu_seconds(int pid);
// The same summed over a server's processes (nginx: master and workers); -1 when one is unreadable.
long read_vmrss_kib(const std::vector<int>& pids);
double read_cpu_seconds(const std::vector<int>& pids);
// Proportional set size (Pss, /proc/PID/smaps_rollup) summed, in KiB: pages shared between
// the processes (nginx's shared memory zone, touched by each worker) count once, not per process.
long read_pss_kib(const std::vector<int>& pids);
// "123" or "123,456": process ids; exits with a message on anything else.
std::vector<int> parse_pids(std::string_view text);
// This process's user+system CPU seconds.
double self_cpu_seconds();
// CPU seconds the whole machine spent busy (all cores, not idle or iowait), from /proc/stat.
double machine_busy_seconds();

}  // namespace lg
