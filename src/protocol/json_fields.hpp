#pragma once
// Reads the fields of one JSON object from outside (HTTP bodies, bus messages)
// with their types and ranges checked, and keeps the first problem as a message
// that names the field. Every decoder of outside input uses it, so each rule
// (non-finite numbers refused, identifiers checked) holds everywhere.

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace chat::protocol {

class JsonFields {
 public:
  // `prefix` names the object in messages: "context." gives "context.temperature must be ...".
  JsonFields(const boost::json::object& object, std::string& error, std::string_view prefix = {})
      : object_(object), error_(error), prefix_(prefix) {}

  bool ok() const { return error_.empty(); }
  // Keeps the first problem only.
  void fail(std::string message);

  // Absent or null: nullopt. Present but not a string, or a string with a
  // NUL character: a problem.
  std::optional<std::string_view> text(std::string_view key);
  // As text(), but a copy, and empty when absent; `required` makes absence a problem.
  std::string string(std::string_view key, bool required = false);
  // A required identifier (1..128 of [A-Za-z0-9_-]).
  std::string identifier(std::string_view key);
  // An optional identifier: empty when absent.
  std::string optional_identifier(std::string_view key);
  // A whole number in [min, max] (1.0 counts as 1).
  std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max);
  // A finite number in [min, max]: JSON text such as 1e400 parses as infinity
  // and would be written back as "Infinity", which is not JSON.
  std::optional<double> number(std::string_view key, double min, double max);
  bool boolean(std::string_view key);
  const boost::json::object* object(std::string_view key);
  const boost::json::array* array(std::string_view key);

 private:
  const boost::json::value* find(std::string_view key) const;
  std::string name(std::string_view key) const { return prefix_ + std::string(key); }

  const boost::json::object& object_;
  std::string& error_;
  std::string prefix_;
};

}  // namespace chat::protocol
