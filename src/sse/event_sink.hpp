#pragma once
// Where a session's frames go: one client's event stream. The session hub talks
// to its streams only through this, so it can be tested without sockets.
//
// Every call may come from any thread and never blocks: a stream queues what it
// is given (bounded) and writes on its own strand.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sse/events.hpp"

namespace chat::sse {

class EventSink {
 public:
  virtual ~EventSink() = default;

  virtual std::string id() const = 0;
  virtual std::string_view session_id() const = 0;

  // A live frame; a client too far behind is cut off rather than waited for.
  virtual void send(Frame frame) = 0;
  // Frames the client missed (late join, resume): queued in one go and exempt
  // from the queue limits, which are for a client that stops reading, not for
  // a burst the server chose to send.
  virtual void send_backlog(const std::vector<Frame>& frames) = 0;
  // Sends `last` (if any), then closes once everything queued is written.
  virtual void close(Frame last = {}) = 0;
  // Ended already (any thread): its detach may have reached the hub before its attach.
  virtual bool has_ended() const = 0;
};

}  // namespace chat::sse
