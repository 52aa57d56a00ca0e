#include "log/log.hpp"

#include <spdlog/async.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <functional>
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
// A queued line's text is on the heap, so the queue is bounded in bytes only
// if lines are: text from outside (a provider's error message, a header) is
// cut, in each value and in the line as a whole (counted as written, escapes
// included). A value this short or shorter (an id) is never cut. A cut value
// is still one quoted string.
constexpr std::size_t kMaxValueBytes = 2048;
constexpr std::size_t kMaxValuesBytes = 8192;
constexpr std::size_t kAlwaysWhole = 64;

std::string format_line(std::string_view event, std::initializer_list<Field> fields);

// stdout, a line at a time, counting the lines it wrote (for flush()). Runs on
// the writer thread only, under the sink's mutex.
class StdoutSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit StdoutSink(std::function<std::size_t()> dropped) : dropped_(std::move(dropped)) {}
  std::size_t written() const { return written_.load(std::memory_order_acquire); }

 private:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    report_drops(msg);
    put(msg);
    written_.fetch_add(1, std::memory_order_release);
  }
  void flush_() override {}  // nothing is buffered

  // Before the first line written after some were dropped: how many went.
  void report_drops(const spdlog::details::log_msg& next) {
    const auto dropped = dropped_();
    if (dropped == reported_ || !enabled(Level::warn)) return;
    auto line = format_line("log_lines_dropped", {{"count", dropped - reported_}, {"total", dropped}});
    reported_ = dropped;
    put(spdlog::details::log_msg(next.time, {}, next.logger_name, spdlog::level::warn, line));
  }

  // Straight to the descriptor, not through stdio's buffer: nothing here is
  // shared with exit's flushing of stdout while this thread may still write.
  void put(const spdlog::details::log_msg& msg) {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    for (std::size_t done = 0; done < line.size();) {
      auto n = ::write(STDOUT_FILENO, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // stdout is closed: the line is lost
      done += static_cast<std::size_t>(n);
    }
  }

  std::function<std::size_t()> dropped_;
  std::size_t reported_ = 0;
  std::atomic<std::size_t> written_{0};
};

struct Output {
  std::shared_ptr<spdlog::details::thread_pool> writer = std::make_shared<spdlog::details::thread_pool>(kQueuedLines, 1);
  std::shared_ptr<StdoutSink> sink =
      std::make_shared<StdoutSink>([pool = writer.get()] { return pool->overrun_counter(); });
  std::shared_ptr<spdlog::async_logger> logger = std::make_shared<spdlog::async_logger>(
      "chat", sink, writer, spdlog::async_overflow_policy::overrun_oldest);
  std::atomic<std::size_t> submitted{0};

  Output() {
    logger->set_level(spdlog::level::trace);  // enabled() is the one filter: every line counted is queued
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc);
  }

  void log(spdlog::level::level_enum level, const std::string& line) {
    submitted.fetch_add(1, std::memory_order_relaxed);
    logger->log(level, "{}", line);
  }
};

// Never destroyed: a line logged at exit (from a library's thread) still finds
// it, and its writer may be stuck on a stdout nobody reads. program_main
// flushes what is queued, a second at most.
Output& output() {
  static Output& instance = *new Output;
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

// At most `room` bytes of s, cut at a character's start, and what was cut said
// (so a reader knows the value is not whole).
std::string cut_to(std::string_view s, std::size_t room) {
  std::size_t keep = room;
  while (keep > 0 && (static_cast<unsigned char>(s[keep]) & 0xC0) == 0x80) --keep;
  return std::string(s.substr(0, keep)) + "...(" + std::to_string(s.size() - keep) + " bytes cut)";
}

// `room`: what is left of the line's budget for string values; spent here.
void append_value(std::string& out, const Field::Value& v, bool quote_strings, std::size_t& room) {
  std::visit(
      [&](const auto& whole) {
        using T = std::decay_t<decltype(whole)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          const std::size_t limit = std::max(kAlwaysWhole, std::min(kMaxValueBytes, room));
          std::string cut;
          std::string_view x = whole;
          if (x.size() > limit) x = cut = cut_to(x, limit);
          const auto before = out.size();
          // Quoted, so escaped, also for any control byte: a value from outside
          // must not forge a line (CR) or drive the terminal (ESC).
          const bool control = std::any_of(x.begin(), x.end(), [](char c) {
            return static_cast<unsigned char>(c) < 0x20;
          });
          bool needs_quotes = quote_strings || x.empty() || control || x.find_first_of(" \"=") != x.npos;
          if (needs_quotes) append_json_string(out, x); else out += x;
          room -= std::min(room, out.size() - before);
        } else if constexpr (std::is_same_v<T, bool>) {
          out += whole ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          // JSON has no NaN or infinity.
          out += std::isfinite(whole) ? std::to_string(whole) : (quote_strings ? "null" : "nan");
        } else {
          out += std::to_string(whole);
        }
      },
      v);
}

std::string format_line(std::string_view event, std::initializer_list<Field> fields) {
  std::string line;
  line.reserve(128);
  std::size_t room = kMaxValuesBytes;
  if (g_format == Format::json) {
    line += "\"event\":";
    append_json_string(line, event);
    for (const auto& f : fields) {
      line.push_back(',');
      append_json_string(line, f.key);
      line.push_back(':');
      append_value(line, f.value, true, room);
    }
  } else {
    line += event;
    for (const auto& f : fields) {
      line.push_back(' ');
      line += f.key;
      line.push_back('=');
      append_value(line, f.value, false, room);
    }
  }
  return line;
}

}  // namespace

void init(Level level, Format format) {
  g_level = level;
  g_format = format;
  auto& l = logger();
  if (format == Format::json)
    l.set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
  else
    l.set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc);
}

bool enabled(Level level) noexcept { return level >= g_level.load(std::memory_order_relaxed); }

void write(Level level, std::string_view event, std::initializer_list<Field> fields) {
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
