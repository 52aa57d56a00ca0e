#include "metrics/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace chat::metrics {
namespace {

constexpr double kLatency[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
constexpr double kFast[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::abs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  // The shortest text that reads back as `v`: nine digits would round a
  // start time in seconds since 1970 to ten seconds.
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

// Label values are escaped as the format requires: backslash, quote, newline.
void escape(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

void escape_help(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

}  // namespace

const Buckets kLatencyBuckets{kLatency};
const Buckets kFastBuckets{kFast};

HistogramSnapshot& HistogramSnapshot::operator+=(const HistogramSnapshot& o) {
  if (counts.empty()) {
    *this = o;
    return *this;
  }
  for (std::size_t i = 0; i < counts.size() && i < o.counts.size(); ++i) counts[i] += o.counts[i];
  sum += o.sum;
  count += o.count;
  return *this;
}

Histogram::Histogram(Buckets bounds) : bounds_(bounds.subspan(0, std::min(bounds.size(), kMaxBuckets))) {}

void Histogram::observe(double seconds) noexcept {
  std::size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  auto ns = seconds <= 0 ? 0 : static_cast<std::uint64_t>(seconds * 1e9);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::snapshot() const {
  HistogramSnapshot s;
  s.bounds.assign(bounds_.begin(), bounds_.end());
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    s.counts.push_back(counts_[i].load(std::memory_order_relaxed));
    s.count += s.counts.back();
  }
  s.sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

Exposition::Family& Exposition::family(std::string_view name, std::string_view help, std::string_view type) {
  for (auto& f : families_)
    if (f.name == name) return f;
  families_.push_back(Family{std::string(name), std::string(help), std::string(type), {}});
  return families_.back();
}

void Exposition::sample(std::string& out, std::string_view name, const Labels& labels, double value,
                        const std::pair<std::string_view, std::string>* extra) {
  out += name;
  if (!labels.empty() || extra) {
    out += '{';
    bool first = true;
    auto label = [&](std::string_view k, std::string_view v) {
      if (!first) out += ',';
      first = false;
      out += k;
      out += "=\"";
      escape(out, v);
      out += '"';
    };
    for (const auto& [k, v] : labels) label(k, v);
    if (extra) label(extra->first, extra->second);
    out += '}';
  }
  out += ' ';
  out += number(value);
  out += '\n';
}

void Exposition::counter(std::string_view name, std::string_view help, double value, const Labels& labels) {
  sample(family(name, help, "counter").samples, name, labels, value);
}

void Exposition::gauge(std::string_view name, std::string_view help, double value, const Labels& labels) {
  sample(family(name, help, "gauge").samples, name, labels, value);
}

void Exposition::histogram(std::string_view name, std::string_view help, const HistogramSnapshot& h,
                           const Labels& labels) {
  auto& out = family(name, help, "histogram").samples;
  std::string n(name);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.counts.size(); ++i) {
    cumulative += h.counts[i];
    std::pair<std::string_view, std::string> le{"le", i < h.bounds.size() ? number(h.bounds[i]) : "+Inf"};
    sample(out, n + "_bucket", labels, static_cast<double>(cumulative), &le);
  }
  sample(out, n + "_sum", labels, h.sum);
  sample(out, n + "_count", labels, static_cast<double>(h.count));
}

std::string Exposition::text() const {
  std::string out;
  for (const auto& f : families_) {
    out += "# HELP ";
    out += f.name;
    out += ' ';
    escape_help(out, f.help);
    out += "\n# TYPE ";
    out += f.name;
    out += ' ';
    out += f.type;
    out += '\n';
    out += f.samples;
  }
  return out;
}

void Registry::add(Collector c) {
  std::lock_guard lock(mutex_);
  collectors_.push_back(std::move(c));
}

std::string Registry::render() const {
  Exposition e;
  std::lock_guard lock(mutex_);
  for (const auto& c : collectors_) c(e);
  return e.text();
}

}  // namespace chat::metrics
