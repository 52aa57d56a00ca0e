#include "trace/span.hpp"

#include <algorithm>

namespace chat::trace {

std::uint64_t unix_nanos(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
}

void Span::set(std::string key, AttributeValue value) {
  if (data_) data_->attributes.push_back({std::move(key), std::move(value)});
}

void Span::rename(std::string name) {
  if (data_) data_->name = std::move(name);
}

void Span::fail(std::string message) {
  if (!data_) return;
  data_->failed = true;
  data_->status_message = std::move(message);
}

void Span::end(std::chrono::system_clock::time_point at) {
  if (!data_) return;
  data_->end_unix_nanos = std::max(unix_nanos(at), data_->start_unix_nanos);
  auto data = std::move(data_);
  sink_->add(std::move(*data));
}

}  // namespace chat::trace
