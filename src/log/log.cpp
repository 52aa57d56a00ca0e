#include "log/log.hpp"

#include <spdlog/async.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

namespace chat::log {
namespace {

std::atomic<Level> g_level{Level::info};
Format g_format = Format::text;

// Lines are written to stdout by a thread of their own: a stdout that blocks
// (a pipe read too slowly, a stalled log collector) must not stall the event
// loops that log. The queue is bounded; when it is full the oldest lines go
// and are counted (lines_dropped()).
constexpr std::size_t kQueuedLines = 4096;

// stdout, a line at a time, counting the lines it wrote (for flush()).
class StdoutSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::size_t written() const { return written_.load(std::memory_order_acquire); }

 private:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
    written_.fetch_add(1, std::memory_order_release);
  }
  void flush_() override { std::fflush(stdout); }

  std::atomic<std::size_t> written_{0};
};

struct Output {
  std::shared_ptr<spdlog::details::thread_pool> writer = std::make_shared<spdlog::details::thread_pool>(kQueuedLines, 1);
  std::shared_ptr<StdoutSink> sink = std::make_shared<StdoutSink>();
  std::shared_ptr<spdlog::async_logger> logger = std::make_shared<spdlog::async_logger>(
      "chat", sink, writer, spdlog::async_overflow_policy::overrun_oldest);
  std::atomic<std::size_t> submitted{0};
  std::atomic<std::size_t> drops_reported{0};

  Output() { logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc); }

  void log(spdlog::level::level_enum level, const std::string& line) {
    submitted.fetch_add(1, std::memory_order_relaxed);
    logger->log(level, "{}", line);
  }
};

// Destroyed at exit after everything that logs; the writer writes out what is
// queued before it stops.
Output& output() {
  static Output instance;
  return instance;
}

spdlog::logger& logger() { return *output().logger; }

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

void append_value(std::string& out, const Field::Value& v, bool quote_strings) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          bool needs_quotes = quote_strings || x.empty() || x.find_first_of(" \"=\n") != x.npos;
          if (needs_quotes) append_json_string(out, x); else out += x;
        } else if constexpr (std::is_same_v<T, bool>) {
          out += x ? "true" : "false";
        } else {
          out += std::to_string(x);
        }
      },
      v);
}

std::string format_line(std::string_view event, std::initializer_list<Field> fields) {
  std::string line;
  line.reserve(128);
  if (g_format == Format::json) {
    line += "\"event\":";
    append_json_string(line, event);
    for (const auto& f : fields) {
      line.push_back(',');
      append_json_string(line, f.key);
      line.push_back(':');
      append_value(line, f.value, true);
    }
  } else {
    line += event;
    for (const auto& f : fields) {
      line.push_back(' ');
      line += f.key;
      line.push_back('=');
      append_value(line, f.value, false);
    }
  }
  return line;
}

// Says, in the log itself, how many lines went since it last said so.
void report_drops() {
  auto& out = output();
  auto dropped = out.writer->overrun_counter();
  auto reported = out.drops_reported.load(std::memory_order_relaxed);
  if (dropped == reported || !out.drops_reported.compare_exchange_strong(reported, dropped)) return;
  out.log(spdlog::level::warn, format_line("log_lines_dropped", {{"count", dropped - reported}, {"total", dropped}}));
}

}  // namespace

void init(Level level, Format format) {
  g_level = level;
  g_format = format;
  auto& l = logger();
  l.set_level(to_spd(level));
  if (format == Format::json)
    l.set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
  else
    l.set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc);
}

bool enabled(Level level) noexcept { return level >= g_level.load(std::memory_order_relaxed); }

void write(Level level, std::string_view event, std::initializer_list<Field> fields) {
  report_drops();
  output().log(to_spd(level), format_line(event, fields));
}

std::size_t lines_dropped() { return output().writer->overrun_counter(); }

void flush() {
  auto& out = output();
  const auto logged = out.submitted.load(std::memory_order_relaxed);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (out.sink->written() + out.writer->overrun_counter() < logged && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

}  // namespace chat::log
