#pragma once
// A minimal non-blocking HTTP/1.1 client on epoll (edge-triggered), one Loop per
// thread. It speaks just what the bench needs: requests written whole, responses
// with Content-Length, chunked or close-delimited bodies, and Server-Sent Events
// parsed into (event, data, id) as they arrive. Only 127.0.0.1 is ever targeted.

#include <cstdint>
#include <string>
#include <string_view>

namespace lg {

struct Conn;

// Callbacks run on the Loop's thread. A callback may close the connection, but
// must not reconnect it (schedule that for later): the Loop is still working on it.
class Handler {
 public:
  virtual ~Handler() = default;
  // TCP connected; queued output is being written.
  virtual void on_open(Conn&) {}
  // Status line and headers parsed (c.status is set).
  virtual void on_headers(Conn&) {}
  // One Server-Sent Event of a 200 response to a request sent with c.sse set.
  virtual void on_event(Conn&, std::string_view /*type*/, std::string_view /*data*/, std::string_view /*id*/) {}
  // A complete non-streaming response (any status); the connection stays open
  // for the next request unless the server asked to close.
  virtual void on_response(Conn&, std::string_view /*body*/) {}
  // The connection is gone (c.fd is already -1); `why` says how.
  virtual void on_close(Conn&, std::string_view why) = 0;
};

enum class BodyMode : std::uint8_t { none, length, chunked, until_close };

struct Conn {
  // Set by the owner.
  Handler* handler = nullptr;
  bool sse = false;         // a 200 body is an event stream
  std::uint32_t slot = 0;   // owner's index
  std::uint8_t kind = 0;    // owner's tag
  // Local address to connect from (host order; 0: the kernel's choice). One
  // address has ~28,000 ports for one server port: more streams through one
  // port (a load balancer) need more addresses of 127.0.0.0/8.
  std::uint32_t source_ip = 0;

  // State, managed by the Loop.
  int fd = -1;
  std::uint64_t gen = 0;     // bumped at every connect and close
  bool connecting = false;
  std::int64_t recv_real_us = 0;  // CLOCK_REALTIME right after the read that brought the current bytes
  std::int64_t recv_mono_ns = 0;
  std::string out;
  std::size_t out_off = 0;
  std::string in;    // raw bytes not yet parsed
  std::string body;  // decoded body bytes not yet consumed
  bool headers_done = false;
  bool streaming = false;  // headers said 200 to an SSE request
  bool close_after = false;
  int status = 0;
  BodyMode mode = BodyMode::none;
  std::uint64_t remaining = 0;
  int chunk_state = 0;
  std::string ev_type, ev_data, ev_id;
  bool ev_any = false;

  bool open() const { return fd >= 0; }
};

class Loop {
 public:
  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Starts a non-blocking connect to 127.0.0.1:port; the request may be queued
  // with send() at once. On an immediate failure returns false with errno kept.
  bool connect(Conn& c, std::uint16_t port);
  // Queues bytes and writes what the socket takes now.
  void send(Conn& c, std::string_view bytes);
  // Closes without calling on_close. `rst`: abortive close (no TIME_WAIT).
  void close(Conn& c, bool rst = false);
  // Waits up to timeout_ms for readiness and handles it; returns the number of events.
  int poll(int timeout_ms);

 private:
  void fail(Conn& c, std::string_view why);
  void on_readable(Conn& c);
  void flush(Conn& c);
  // Parses c.in; false when the connection was closed or replaced meanwhile.
  bool process(Conn& c, bool eof);
  bool parse_headers(Conn& c);
  // Decodes body bytes from c.in into c.body; true when the body is complete.
  bool decode_body(Conn& c, bool eof, bool& error);
  bool dispatch_events(Conn& c);
  void reset_response(Conn& c);

  int ep_ = -1;
  char* buf_ = nullptr;
};

}  // namespace lg
