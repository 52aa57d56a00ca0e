#include "util.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <thread>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace lg {
namespace {

// Howard Hinnant's days_from_civil.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

std::size_t skip_ws(std::string_view s, std::size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// s[i] == '"'; returns the index after the closing quote, npos when unterminated.
std::size_t skip_string(std::string_view s, std::size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Skips one JSON value starting at s[i]; returns the index after it.
std::size_t skip_value(std::string_view s, std::size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  if (s[i] == '"') return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        i = skip_string(s, i);
        if (i == std::string_view::npos) return i;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return std::string_view::npos;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
         s[i] != '\r' && s[i] != '\t')
    ++i;
  return i;
}

}  // namespace

std::optional<std::int64_t> parse_rfc3339_us(std::string_view s) {
  int y, mo, d, h, mi, se;
  if (!digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s, 11, 2, h) ||
      s[13] != ':' || !digits(s, 14, 2, mi) || s[16] != ':' || !digits(s, 17, 2, se))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return std::nullopt;
  std::size_t i = 19;
  std::int64_t frac_us = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (n < 6) {
        frac_us = frac_us * 10 + (s[i] - '0');
        ++n;
      }
      ++i;
    }
    if (n == 0) return std::nullopt;
    for (; n < 6; ++n) frac_us *= 10;
  }
  std::int64_t offset_s = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh, om;
    if (!digits(s, i + 1, 2, oh) || i + 3 >= s.size() || s[i + 3] != ':' || !digits(s, i + 4, 2, om))
      return std::nullopt;
    offset_s = (oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  std::int64_t days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset_s;
  return secs * 1'000'000 + frac_us;
}

std::optional<std::string_view> json_member(std::string_view s, std::string_view key) {
  std::size_t i = skip_ws(s, 0);
  if (i >= s.size() || s[i] != '{') return std::nullopt;
  i = skip_ws(s, i + 1);
  if (i < s.size() && s[i] == '}') return std::nullopt;
  while (i < s.size()) {
    if (s[i] != '"') return std::nullopt;
    std::size_t kend = skip_string(s, i);
    if (kend == std::string_view::npos) return std::nullopt;
    std::string_view k = s.substr(i + 1, kend - i - 2);
    i = skip_ws(s, kend);
    if (i >= s.size() || s[i] != ':') return std::nullopt;
    i = skip_ws(s, i + 1);
    std::size_t vend = skip_value(s, i);
    if (vend == std::string_view::npos) return std::nullopt;
    if (k == key) {
      if (s[i] == '"') return s.substr(i + 1, vend - i - 2);
      return s.substr(i, vend - i);
    }
    i = skip_ws(s, vend);
    if (i >= s.size()) return std::nullopt;
    if (s[i] == '}') return std::nullopt;
    if (s[i] != ',') return std::nullopt;
    i = skip_ws(s, i + 1);
  }
  return std::nullopt;
}

std::optional<std::int64_t> to_int(std::string_view s) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

void Samples::add(std::int64_t us) {
  if (v_.size() >= kMax) {
    ++dropped_;
    return;
  }
  if (us < 0) ++negative_;
  // ±35 minutes saturate: no latency figure reaches that far.
  us = std::clamp<std::int64_t>(us, INT32_MIN, INT32_MAX);
  v_.push_back(static_cast<std::int32_t>(us));
  sum_us_ += static_cast<double>(us);
  sorted_ = false;
}

void Samples::merge(const Samples& o) {
  v_.insert(v_.end(), o.v_.begin(), o.v_.end());
  dropped_ += o.dropped_;
  negative_ += o.negative_;
  sum_us_ += o.sum_us_;
  sorted_ = false;
}

double Samples::percentile_ms(double p) {
  if (v_.empty()) return std::nan("");
  if (!sorted_) {
    std::sort(v_.begin(), v_.end());
    sorted_ = true;
  }
  double rank = std::ceil(p / 100.0 * static_cast<double>(v_.size()));
  std::size_t idx = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  if (idx >= v_.size()) idx = v_.size() - 1;
  return v_[idx] / 1000.0;
}

double Samples::mean_ms() const {
  return v_.empty() ? std::nan("") : sum_us_ / static_cast<double>(v_.size()) / 1000.0;
}

void JsonLine::key(std::string_view k) {
  if (s_.size() > 1) s_ += ',';
  s_ += '"';
  s_ += k;
  s_ += "\":";
}

JsonLine& JsonLine::num(std::string_view k, double v, int decimals) {
  key(k);
  if (!std::isfinite(v)) {
    s_ += "null";
    return *this;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  s_ += buf;
  return *this;
}

JsonLine& JsonLine::integer(std::string_view k, std::int64_t v) {
  key(k);
  s_ += std::to_string(v);
  return *this;
}

JsonLine& JsonLine::str(std::string_view k, std::string_view v) {
  key(k);
  s_ += esc(v);
  return *this;
}

JsonLine& JsonLine::boolean(std::string_view k, bool v) {
  key(k);
  s_ += v ? "true" : "false";
  return *this;
}

JsonLine& JsonLine::raw(std::string_view k, std::string_view json) {
  key(k);
  s_ += json;
  return *this;
}

std::string JsonLine::esc(std::string_view v) {
  std::string o = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += c;
    }
  }
  o += '"';
  return o;
}

void log(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "loadgen: ");
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
}

void sleep_until_ns(std::int64_t t) {
  for (std::int64_t now = mono_ns(); now < t; now = mono_ns())
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<std::int64_t>(t - now, 50'000'000)));
}

std::string status_json(const std::map<int, std::uint64_t>& m) {
  JsonLine j;
  for (auto& [k, v] : m) j.integer(std::to_string(k), static_cast<std::int64_t>(v));
  return j.done();
}

std::string problems_json(const std::vector<std::string>& p) {
  std::string s = "[";
  for (std::size_t i = 0; i < p.size(); ++i) s += (i ? "," : "") + JsonLine::esc(p[i]);
  return s + "]";
}

namespace {

// The value of a "Key:   123 kB" line of a /proc file; -1 when absent or unreadable.
long proc_kib(const std::string& path, std::string_view key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::strtol(line.c_str() + key.size(), nullptr, 10);
  }
  return -1;
}

// A per-process reading summed over processes; -1 when one is unreadable.
template <class T, class Read>
T sum_over(const std::vector<int>& pids, Read read) {
  T sum = 0;
  for (int pid : pids) {
    T v = read(pid);
    if (v < 0) return -1;
    sum += v;
  }
  return sum;
}

std::string proc_path(int pid, const char* file) { return "/proc/" + std::to_string(pid) + "/" + file; }

}  // namespace

long read_vmrss_kib(int pid) { return proc_kib(proc_path(pid, "status"), "VmRSS:"); }

long read_vmrss_kib(const std::vector<int>& pids) {
  return sum_over<long>(pids, [](int pid) { return read_vmrss_kib(pid); });
}

long read_pss_kib(const std::vector<int>& pids) {
  return sum_over<long>(pids, [](int pid) { return proc_kib(proc_path(pid, "smaps_rollup"), "Pss:"); });
}

double read_cpu_seconds(const std::vector<int>& pids) {
  return sum_over<double>(pids, [](int pid) { return read_cpu_seconds(pid); });
}

std::vector<int> parse_pids(std::string_view text) {
  std::vector<int> pids;
  while (!text.empty()) {
    auto comma = text.find(',');
    auto part = text.substr(0, comma);
    auto pid = to_int(part);
    if (!pid || *pid <= 0 || *pid > 1'000'000'000) {
      std::fprintf(stderr, "loadgen: bad process id '%.*s'\n", static_cast<int>(part.size()), part.data());
      std::exit(2);
    }
    pids.push_back(static_cast<int>(*pid));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return pids;
}

double read_cpu_seconds(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = all.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(all.substr(close + 2));
  std::string field;
  // Fields after the command: 3 state, ..., 14 utime, 15 stime (1-based in proc(5)).
  unsigned long long utime = 0, stime = 0;
  for (int n = 3; n <= 15 && (in >> field); ++n) {
    if (n == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (n == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double self_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double machine_busy_seconds() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  f >> cpu;
  for (auto& x : v) f >> x;
  if (cpu != "cpu") return -1;
  // user nice system idle iowait irq softirq steal
  unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  return static_cast<double>(busy) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace lg
