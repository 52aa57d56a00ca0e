#pragma once
// Counters, gauges and histograms that cost nothing measurable where they are
// recorded (one relaxed atomic add; no lock, no allocation), and the
// Prometheus text exposition that renders them at scrape time.
//
// A component keeps its own instruments (per shard where a hot path runs on
// several threads, so no cache line is shared) and registers a collector that
// reads them; /metrics only renders. Label values must be of bounded
// cardinality: never a session, user or message id.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chat::metrics {

class Counter {
 public:
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(std::int64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(std::int64_t d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  std::int64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> value_{0};
};

// Upper bounds in seconds, ascending; +Inf is implied.
using Buckets = std::span<const double>;
// 1 ms .. 60 s: request handling, first chunk, generation.
extern const Buckets kLatencyBuckets;
// 50 µs .. 1 s: a chunk's way through the pod.
extern const Buckets kFastBuckets;

struct HistogramSnapshot {
  std::vector<double> bounds;
  std::vector<std::uint64_t> counts;  // per bucket, not cumulative; one more for +Inf
  double sum = 0;
  std::uint64_t count = 0;
  HistogramSnapshot& operator+=(const HistogramSnapshot& o);
};

class Histogram {
 public:
  static constexpr std::size_t kMaxBuckets = 24;
  explicit Histogram(Buckets bounds = kLatencyBuckets);

  void observe(double seconds) noexcept;
  HistogramSnapshot snapshot() const;

 private:
  Buckets bounds_;
  std::array<std::atomic<std::uint64_t>, kMaxBuckets + 1> counts_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// Instruments keyed by label values that are known only as they come (a
// route and status, a provider and error code): looked up under a lock, so
// for things counted per request or per reply, not per chunk.
template <class Instrument>
class Labelled {
 public:
  explicit Labelled(std::vector<std::string> names) : names_(std::move(names)) {}

  Instrument& at(const std::vector<std::string>& values) {
    std::lock_guard lock(mutex_);
    for (auto& [v, instrument] : items_)
      if (v == values) return *instrument;
    items_.emplace_back(values, std::make_unique<Instrument>());
    return *items_.back().second;
  }
  // Calls fn(labels, instrument) for each label set seen so far.
  template <class Fn>
  void each(Fn fn) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, instrument] : items_) {
      Labels labels;
      for (std::size_t i = 0; i < names_.size() && i < values.size(); ++i) labels.emplace_back(names_[i], values[i]);
      fn(labels, *instrument);
    }
  }

 private:
  std::vector<std::string> names_;
  mutable std::mutex mutex_;  // guards items_: recorded and scraped on many threads
  std::vector<std::pair<std::vector<std::string>, std::unique_ptr<Instrument>>> items_;
};

// Builds the text exposition (format 0.0.4). A family's HELP/TYPE lines are
// written once, however many collectors add samples to it.
class Exposition {
 public:
  void counter(std::string_view name, std::string_view help, double value, const Labels& labels = {});
  void gauge(std::string_view name, std::string_view help, double value, const Labels& labels = {});
  void histogram(std::string_view name, std::string_view help, const HistogramSnapshot& h, const Labels& labels = {});
  std::string text() const;

 private:
  struct Family {
    std::string name, help, type;
    std::string samples;
  };
  Family& family(std::string_view name, std::string_view help, std::string_view type);
  static void sample(std::string& out, std::string_view name, const Labels& labels, double value,
                     const std::pair<std::string_view, std::string>* extra = nullptr);

  std::vector<Family> families_;
};

class Registry {
 public:
  using Collector = std::function<void(Exposition&)>;
  // Collectors run at each scrape, in the order they were added, on the
  // scraping thread: they only read atomics (or call thread-safe getters).
  void add(Collector c);
  std::string render() const;

 private:
  mutable std::mutex mutex_;  // guards collectors_: added at start, read by scrapes
  std::vector<Collector> collectors_;
};

}  // namespace chat::metrics
