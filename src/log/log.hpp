#pragma once
// One structured logger for the whole process. A log line is an event name plus
// key/value fields; LOG_FORMAT picks JSON objects or "event key=value" text.
// Lines go to stdout from a thread of their own, so a caller never waits for
// the output.

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace chat::log {

enum class Level { debug, info, warn, error };
enum class Format { text, json };

struct Field {
  using Value = std::variant<std::string_view, std::int64_t, double, bool>;
  std::string_view key;
  Value value;

  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(std::string_view{v}) {}
  Field(std::string_view k, const std::string& v) : key(k), value(std::string_view{v}) {}
  template <class Int>
    requires std::is_integral_v<Int> && (!std::is_same_v<Int, bool>)
  Field(std::string_view k, Int v) : key(k), value(static_cast<std::int64_t>(v)) {}
  Field(std::string_view k, double v) : key(k), value(v) {}
  Field(std::string_view k, bool v) : key(k), value(v) {}
};

void init(Level level, Format format);
// Lines lost because stdout did not keep up (see log.cpp), since the start.
std::size_t lines_dropped();
// Waits (a second at most) until every line logged so far is on stdout or dropped.
void flush();
bool enabled(Level level) noexcept;
void write(Level level, std::string_view event, std::initializer_list<Field> fields);

inline void debug(std::string_view e, std::initializer_list<Field> f = {}) { if (enabled(Level::debug)) write(Level::debug, e, f); }
inline void info(std::string_view e, std::initializer_list<Field> f = {}) { if (enabled(Level::info)) write(Level::info, e, f); }
inline void warn(std::string_view e, std::initializer_list<Field> f = {}) { if (enabled(Level::warn)) write(Level::warn, e, f); }
inline void error(std::string_view e, std::initializer_list<Field> f = {}) { if (enabled(Level::error)) write(Level::error, e, f); }

}  // namespace chat::log
