#include "log/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <memory>

namespace chat::log {
namespace {

std::atomic<Level> g_level{Level::info};
Format g_format = Format::text;

std::shared_ptr<spdlog::logger> make_default() {
  auto logger = spdlog::stdout_logger_mt("chat");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc);
  logger->flush_on(spdlog::level::trace);
  return logger;
}

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> instance = make_default();
  return *instance;
}

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
  logger().log(to_spd(level), "{}", line);
}

}  // namespace chat::log
