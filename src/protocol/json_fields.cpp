#include "protocol/json_fields.hpp"

#include <cmath>

#include "common/identifier.hpp"

namespace json = boost::json;

namespace chat::protocol {
namespace {

std::string number_text(double v) {
  auto s = std::to_string(v);
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

void JsonFields::fail(std::string message) {
  if (error_.empty()) error_ = std::move(message);
}

const json::value* JsonFields::find(std::string_view key) const {
  auto* v = object_.if_contains(key);
  return v && !v->is_null() ? v : nullptr;
}

std::optional<std::string_view> JsonFields::text(std::string_view key) {
  auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_string()) {
    fail(name(key) + " must be a string");
    return std::nullopt;
  }
  // PostgreSQL refuses NUL in text (SQLite would keep it), and no chat text needs it.
  std::string_view s(v->get_string());
  if (s.find('\0') != std::string_view::npos) {
    fail(name(key) + " must not contain NUL characters");
    return std::nullopt;
  }
  return s;
}

std::string JsonFields::string(std::string_view key, bool required) {
  auto t = text(key);
  if (!t && required && ok()) fail(name(key) + " is required");
  return t ? std::string(*t) : std::string();
}

std::string JsonFields::identifier(std::string_view key) {
  auto s = string(key, true);
  if (ok() && !is_valid_identifier(s)) fail(name(key) + " must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'");
  return s;
}

std::string JsonFields::optional_identifier(std::string_view key) {
  auto s = string(key);
  if (ok() && !s.empty() && !is_valid_identifier(s))
    fail(name(key) + " must be 1 to 128 characters of A-Z, a-z, 0-9, '_' or '-'");
  return s;
}

std::optional<std::int64_t> JsonFields::integer(std::string_view key, std::int64_t min, std::int64_t max) {
  auto* v = find(key);
  if (!v) return std::nullopt;
  std::optional<std::int64_t> out;
  if (v->is_int64()) out = v->get_int64();
  else if (v->is_uint64() && v->get_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    out = static_cast<std::int64_t>(v->get_uint64());
  else if (v->is_double() && std::isfinite(v->get_double()) && std::abs(v->get_double()) < 9.0e18 &&
           v->get_double() == std::trunc(v->get_double()))
    out = static_cast<std::int64_t>(v->get_double());
  if (!out || *out < min || *out > max) {
    fail(name(key) + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
    return std::nullopt;
  }
  return out;
}

std::optional<double> JsonFields::number(std::string_view key, double min, double max) {
  auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_number() || !std::isfinite(v->to_number<double>()) || v->to_number<double>() < min ||
      v->to_number<double>() > max) {
    fail(name(key) + " must be a number from " + number_text(min) + " to " + number_text(max));
    return std::nullopt;
  }
  return v->to_number<double>();
}

bool JsonFields::boolean(std::string_view key) {
  auto* v = find(key);
  if (!v) return false;
  if (!v->is_bool()) {
    fail(name(key) + " must be true or false");
    return false;
  }
  return v->get_bool();
}

const json::object* JsonFields::object(std::string_view key) {
  auto* v = find(key);
  if (!v) return nullptr;
  if (!v->is_object()) {
    fail(name(key) + " must be an object");
    return nullptr;
  }
  return &v->get_object();
}

const json::array* JsonFields::array(std::string_view key) {
  auto* v = find(key);
  if (!v) return nullptr;
  if (!v->is_array()) {
    fail(name(key) + " must be an array");
    return nullptr;
  }
  return &v->get_array();
}

}  // namespace chat::protocol
