#pragma once
// Incremental Server-Sent-Events parser (WHATWG "event stream interpretation")
// for provider replies. Bytes arrive in arbitrary pieces (TCP reads, HTTP
// chunks): a line, a CRLF pair or a multi-byte UTF-8 character may be split
// anywhere, so nothing is interpreted before its line is complete, and an event
// is handed out only after its terminating blank line.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace chat::http_client {

struct StreamEvent {
  std::string type;  // "event:" field; empty means "message"
  std::string data;  // "data:" lines joined with '\n'
  std::string id;
};

class EventStreamParser {
 public:
  explicit EventStreamParser(std::size_t max_event_bytes = 4 * 1024 * 1024) : max_event_bytes_(max_event_bytes) {}

  // Parses `bytes` and appends every event they complete to `out`. Returns
  // false (and parses no further) once an event grows beyond the limit.
  bool feed(std::string_view bytes, std::vector<StreamEvent>& out);

  // The stream ended: an event whose data lines were complete but whose blank
  // line never came is still handed out. The spec drops it, but servers that
  // close right after their last "data: [DONE]" line are common enough.
  void finish(std::vector<StreamEvent>& out);

 private:
  void line_complete(std::vector<StreamEvent>& out);
  void dispatch(std::vector<StreamEvent>& out);

  std::size_t max_event_bytes_;
  std::string line_;
  StreamEvent pending_;
  bool has_data_ = false;
  bool skip_lf_ = false;       // the last piece ended in CR: a leading LF belongs to it
  bool at_stream_start_ = true;  // a UTF-8 BOM may open the stream
  bool overflow_ = false;
};

}  // namespace chat::http_client
