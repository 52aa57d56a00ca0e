#include "http_client/event_stream_parser.hpp"

#include <cstring>

namespace chat::http_client {

bool EventStreamParser::feed(std::string_view bytes, std::vector<StreamEvent>& out) {
  if (overflow_) return false;
  std::size_t i = 0;
  if (skip_lf_ && !bytes.empty()) {
    skip_lf_ = false;
    if (bytes.front() == '\n') i = 1;
  }
  while (i < bytes.size()) {
    // Copy the run up to the next line ending in one go: tokens are small but
    // the scan runs for every byte of every reply.
    const char* start = bytes.data() + i;
    std::size_t rest = bytes.size() - i;
    const void* lf = std::memchr(start, '\n', rest);
    const void* cr = std::memchr(start, '\r', lf ? static_cast<const char*>(lf) - start : rest);
    const char* end = static_cast<const char*>(cr ? cr : lf);
    if (!end) {
      line_.append(start, rest);
      if (line_.size() + pending_.data.size() > max_event_bytes_) return !(overflow_ = true);
      return true;
    }
    line_.append(start, static_cast<std::size_t>(end - start));
    i = static_cast<std::size_t>(end - bytes.data()) + 1;
    if (*end == '\r') {
      if (i == bytes.size()) skip_lf_ = true;
      else if (bytes[i] == '\n') ++i;
    }
    line_complete(out);
    if (pending_.data.size() > max_event_bytes_) return !(overflow_ = true);
  }
  return true;
}

void EventStreamParser::finish(std::vector<StreamEvent>& out) {
  if (overflow_) return;
  if (!line_.empty()) line_complete(out);
  dispatch(out);
}

void EventStreamParser::line_complete(std::vector<StreamEvent>& out) {
  std::string_view line = line_;
  if (at_stream_start_) {
    at_stream_start_ = false;
    if (line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
  }
  if (line.empty()) {
    dispatch(out);
  } else if (line.front() != ':') {  // a colon first: a comment (keep-alive)
    auto colon = line.find(':');
    auto field = line.substr(0, colon);
    std::string_view value;
    if (colon != std::string_view::npos) {
      value = line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "data") {
      if (has_data_) pending_.data.push_back('\n');
      pending_.data.append(value);
      has_data_ = true;
    } else if (field == "event") {
      pending_.type.assign(value);
    } else if (field == "id") {
      if (value.find('\0') == std::string_view::npos) pending_.id.assign(value);
    }  // "retry" and unknown fields: nothing for a client that never reconnects
  }
  line_.clear();
}

void EventStreamParser::dispatch(std::vector<StreamEvent>& out) {
  // Per spec an event without data lines is not dispatched; its type resets.
  if (has_data_) out.push_back(std::move(pending_));
  pending_ = StreamEvent{};
  has_data_ = false;
}

}  // namespace chat::http_client
