#pragma once
// One client's event stream. Owns the socket after the HTTP layer hands it over.
//
// Threads: send() and close() may be called from any thread; they touch only the
// queue under the stream's queue mutex and post to the connection's strand,
// where the socket's asynchronous I/O happens. The exception is a live frame,
// sent within a WriteNowScope, for a stream that has nothing queued and nothing
// in flight: send() writes it to the socket itself, non-blocking, under the
// mutex (closing the socket also takes it). One asynchronous write is in flight
// at a time and carries every frame queued meanwhile (gathered, never copied,
// in slices so that progress is visible).
// A client that falls behind first gets coalesced events: while many live
// events wait for it, a reply's next chunk is merged into the chunk event
// queued before it (the text joined, the later event id), so it receives fewer,
// larger events and stays connected. A client that still does not keep up lets
// its queue grow past the limits and is cut off; nobody else waits for it.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/identifier.hpp"
#include "common/short_string.hpp"
#include "metrics/metrics.hpp"
#include "sse/event_sink.hpp"

namespace chat::sse {

struct QueueLimits {
  std::size_t max_events = 1024;
  std::size_t max_bytes = 1024 * 1024;
  std::size_t socket_send_buffer = 512 * 1024;  // SO_SNDBUF; 0: leave the kernel's default
  std::chrono::milliseconds stall_grace{1'000};
  // Live events waiting (written or queued, not yet taken by the kernel) from
  // which chunks are coalesced; 0: max_events / 8.
  std::size_t coalesce_after = 0;
};

// Shared by every stream of a pod; recorded from any thread (atomic counts).
struct StreamMetrics {
  // From a chunk's timestamp (the worker's clock) to its bytes written to the socket.
  metrics::Histogram delivery{metrics::kFastBuckets};
  // Streams that ended, by why: client_closed, read_failed, write_failed,
  // slow_client, closed_by_server.
  static constexpr std::array<const char*, 5> kEndReasons{"client_closed", "read_failed", "write_failed",
                                                          "slow_client", "closed_by_server"};
  std::array<metrics::Counter, kEndReasons.size()> ended;
  // Chunks merged into the chunk event queued before them (slow clients).
  metrics::Counter coalesced;
};

class SseConnection;

// What every stream of a pod shares, owned by the pod: a stream keeps one
// reference to it rather than copies (an idle stream is mostly fixed fields).
struct StreamContext {
  QueueLimits limits;
  StreamMetrics* metrics = nullptr;  // optional
  // Runs once per stream, on its strand, when it ends for any reason. Must not be empty.
  std::function<void(const std::shared_ptr<SseConnection>&, std::string_view reason)> on_closed;
};

// While one is open on a thread, send() on that thread may write a live frame
// to the socket itself (see SseConnection::send); elsewhere frames go through
// the stream's strand. The hub opens one while its shard has no other work
// waiting: an idle pod answers at once, a busy one lets a stream's frames
// gather into one write.
class WriteNowScope {
 public:
  explicit WriteNowScope(bool enabled);
  ~WriteNowScope();
  WriteNowScope(const WriteNowScope&) = delete;
  WriteNowScope& operator=(const WriteNowScope&) = delete;

  static bool active();

 private:
  bool previous_;
};

class SseConnection final : public EventSink, public std::enable_shared_from_this<SseConnection> {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  // The socket's executor must be a strand of an io_context (the listener
  // gives each connection one): the connection runs on it and adds no strand
  // of its own. It keeps the socket with that executor's concrete type, which
  // makes the socket and every operation waiting on it smaller than with the
  // type-erased executor. `context` must outlive the connection.
  SseConnection(boost::asio::ip::tcp::socket socket, CompactId id, std::string_view session_id,
                const StreamContext& context);

  // Writes the response head and the first frames, then watches for the client
  // going away. `lease` (say, an admission ticket) is held until the stream ends.
  void start(std::string head, std::vector<Frame> first, std::shared_ptr<void> lease = {});

  void send(Frame frame) override;
  void send_backlog(const std::vector<Frame>& frames) override;
  void close(Frame last = {}) override;
  bool has_ended() const override { return has_ended_.load(std::memory_order_acquire); }

  // "conn_" and ten characters.
  std::string id() const override { return id_.spelled("conn_"); }
  std::string_view session_id() const override { return session_id_; }

 private:
  void schedule_flush_locked();
  bool is_stuck_locked() const;
  bool coalesced_locked(const Frame& frame);
  Frame write_directly_locked(Frame frame);
  void flush();
  void write_slice();
  void on_written(boost::system::error_code ec, std::size_t slice_end);
  void watch_for_close();
  void cut_if_not_closed_in_time();
  void on_readable(boost::system::error_code ec);
  void terminate(const char* reason);
  void ended(const char* reason);
  void observe_delivery(const EncodedFrame& frame, SystemTime now) const;
  // Guards the outbox's pointer and its queue, the flags below it, and the
  // socket's closing: producers on any thread append, the strand drains. One of
  // a pool shared by all streams, picked by address (an idle stream carries no
  // mutex of its own); nothing holds it while taking another's.
  std::mutex& queue_mutex() const;

  using Socket = boost::asio::basic_stream_socket<boost::asio::ip::tcp, Strand>;
  Socket socket_;
  CompactId id_;
  ShortString session_id_;
  const StreamContext& context_;
  std::shared_ptr<void> lease_;

  // What the stream has queued or is writing. It exists only while there is
  // something to write: an idle stream, most of them, carries a null pointer
  // rather than two vectors and their counters. Producers create it (under the
  // queue mutex, when it is null); only the strand frees it (under the mutex,
  // in flush(), once nothing is queued or in flight), so while a write is in
  // flight the strand may use it without the lock.
  struct Outbox {
    // Under the queue mutex. Counters are 32-bit: the queue limits keep them
    // far below that.
    std::vector<Frame> queued;
    std::uint32_t queued_bytes = 0;   // counts only frames under the limits
    std::uint32_t queued_exempt = 0;  // backlog frames in queued
    bool last_queued_live = false;    // the last frame of queued came through send()
    std::chrono::steady_clock::time_point write_in_flight_since{};  // {}: no write in flight
    std::uint32_t writing_count = 0;  // frames of the write in flight, backlog excluded
    // Chunks merged into another's event (coalesced_locked), waiting in queued
    // and in the write in flight: the stall rule counts them as the events
    // they were, or merging would keep a client that stopped reading under it.
    std::uint32_t queued_merged = 0;
    std::uint32_t writing_merged = 0;

    // Strand-only.
    std::vector<Frame> writing;        // the batch being written, in slices
    std::uint32_t written = 0;          // frames of writing the kernel has taken
    std::uint32_t exempt_in_batch = 0;  // backlog frames in writing
    bool write_in_flight = false;
  };
  Outbox& outbox_locked();

  std::unique_ptr<Outbox> outbox_;  // see Outbox
  // Under the queue mutex.
  bool flush_scheduled_ = false;
  bool closing_ = false;  // no more frames accepted; close after the queue is written
  bool closed_ = false;
  std::atomic<bool> has_ended_{false};  // set on the strand, read by the hub's shard
  bool started_ = false;  // the response head is queued: frames may follow it
};

}  // namespace chat::sse
