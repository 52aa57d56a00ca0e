#include "sse/sse_connection.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <stdexcept>

namespace asio = boost::asio;

namespace chat::sse {

namespace {

thread_local bool write_now = false;

// 64-byte slots: neighbouring mutexes taken on different cores share no cache line.
struct alignas(64) PaddedMutex {
  std::mutex mutex;
};
std::array<PaddedMutex, 1024> queue_mutexes;

SseConnection::Strand strand_of(asio::ip::tcp::socket& socket) {
  auto executor = socket.get_executor();
  const auto* strand = executor.target<SseConnection::Strand>();
  if (strand == nullptr) throw std::logic_error("an SSE stream's socket must run on a strand of an io_context");
  return *strand;
}

}  // namespace

WriteNowScope::WriteNowScope(bool enabled) : previous_(write_now) { write_now = enabled; }
WriteNowScope::~WriteNowScope() { write_now = previous_; }
bool WriteNowScope::active() { return write_now; }

// The descriptor moves from the type-erased socket to one of the concrete type
// (released from the reactor and registered again: two system calls per stream).
SseConnection::SseConnection(asio::ip::tcp::socket socket, CompactId id, std::string_view session_id,
                             const StreamContext& context)
    : socket_(strand_of(socket)),
      id_(id),
      session_id_(session_id),
      context_(context) {
  if (!socket.is_open()) return;
  boost::system::error_code ec;
  auto local = socket.local_endpoint(ec);  // a client already gone still leaves its address
  auto protocol = ec ? asio::ip::tcp::v4() : local.protocol();
  auto fd = socket.release(ec);
  if (ec) return;  // the socket stays closed: start() ends the stream
  socket_.assign(protocol, fd, ec);
  if (ec) ::close(fd);
}

std::mutex& SseConnection::queue_mutex() const {
  // Blocks from the allocator are 16-byte aligned: skip the bits that never vary.
  return queue_mutexes[(reinterpret_cast<std::uintptr_t>(this) >> 4) % queue_mutexes.size()].mutex;
}

SseConnection::Outbox& SseConnection::outbox_locked() {
  if (!outbox_) outbox_ = std::make_unique<Outbox>();
  return *outbox_;
}

void SseConnection::start(std::string head, std::vector<Frame> first, std::shared_ptr<void> lease) {
  lease_ = std::move(lease);
  if (!socket_.is_open()) {  // the descriptor could not be adopted: the stream ends before it began
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->ended("write_failed"); });
    return;
  }
  // A reply can burst faster than a reading client drains a fresh connection's
  // small send buffer; let the kernel absorb a burst so the queue limit only
  // catches clients that stop reading. Costs nothing while the stream is idle.
  if (auto size = context_.limits.socket_send_buffer) {
    boost::system::error_code ignored;
    socket_.set_option(asio::socket_base::send_buffer_size(static_cast<int>(size)), ignored);
  }
  {
    std::lock_guard lock(queue_mutex());
    // The head goes out first, ahead of anything a producer queues meanwhile.
    auto& box = outbox_locked();
    box.queued.insert(box.queued.begin(), raw_frame(std::move(head)));
    for (auto& f : first) box.queued.push_back(std::move(f));
    box.queued_exempt = static_cast<std::uint32_t>(box.queued.size());
    box.last_queued_live = false;
    started_ = true;
    schedule_flush_locked();
  }
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->watch_for_close(); });
}

void SseConnection::send(Frame frame) {
  std::lock_guard lock(queue_mutex());
  if (closing_ || closed_) return;
  if (coalesced_locked(frame)) return;
  frame = write_directly_locked(std::move(frame));
  if (!frame) return;
  auto& box = outbox_locked();
  box.queued_bytes += static_cast<std::uint32_t>(frame->size());
  box.queued.push_back(std::move(frame));
  box.last_queued_live = true;
  if (is_stuck_locked()) {
    // The client stopped reading: drop it rather than let it hold memory or
    // anyone else's progress.
    closed_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->terminate("slow_client"); });
    return;
  }
  schedule_flush_locked();
}

bool SseConnection::is_stuck_locked() const {
  if (!outbox_) return false;
  const auto& box = *outbox_;
  if (box.queued_bytes > context_.limits.max_bytes) return true;
  // Frames the kernel has not taken yet: the write in flight and the queue.
  // Over the event limit, a client that still takes our writes gets a moment to
  // catch up with a burst; one whose write has hung that long is not reading.
  const auto waiting = box.writing_count + box.writing_merged + box.queued.size() + box.queued_merged - box.queued_exempt;
  return waiting > context_.limits.max_events &&
         box.write_in_flight_since != std::chrono::steady_clock::time_point{} &&
         std::chrono::steady_clock::now() - box.write_in_flight_since > context_.limits.stall_grace;
}

// Only a live chunk queued behind many waiting events merges, and only into
// the live chunk event queued last (never into the batch being written, nor
// into a backlog), so every event goes out once and in order. A merged event
// grows to kMaxMergedBytes, then the next chunk starts another: each merge
// parses the event it grows, so an unbounded one would cost the producer's
// thread (a shard's, shared with other sessions) time in the square of a
// long reply's length.
bool SseConnection::coalesced_locked(const Frame& frame) {
  constexpr std::size_t kMaxMergedBytes = 16 * 1024;
  if (frame->mergeable_reply == 0 || !outbox_) return false;
  auto& box = *outbox_;
  if (!box.last_queued_live || box.queued.empty() || box.queued.back()->size() >= kMaxMergedBytes) return false;
  const auto& limits = context_.limits;
  const auto threshold = limits.coalesce_after ? limits.coalesce_after : std::max<std::size_t>(limits.max_events / 8, 1);
  if (box.writing_count + box.queued.size() - box.queued_exempt < threshold) return false;
  auto merged = merge_chunk_frames(*box.queued.back(), *frame);
  if (!merged) return false;
  box.queued_bytes += static_cast<std::uint32_t>(merged->size() - box.queued.back()->size());
  box.queued.back() = std::move(merged);
  ++box.queued_merged;
  if (auto* metrics = context_.metrics) metrics->coalesced.add();
  if (box.queued_bytes > context_.limits.max_bytes || is_stuck_locked()) {
    closed_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->terminate("slow_client"); });
  }
  return true;
}

// A live frame sent within a WriteNowScope, for a stream with nothing queued
// and no write in flight (no outbox), goes straight to the socket from the
// producer's thread: the common case of a reading client costs no hand-off to
// the strand (on two busy cores each hand-off is a scheduler wake-up, the bulk
// of a chunk's tail latency). The lock is held across the non-blocking send so
// that nothing can queue ahead of it or close the socket under it. Returns what
// is left to queue for the strand: all of it, the part the kernel did not take
// at once (which can no longer merge with a later chunk), or nothing.
Frame SseConnection::write_directly_locked(Frame frame) {
  if (!WriteNowScope::active() || !started_ || outbox_ || !socket_.is_open()) return frame;
  auto sent = ::send(socket_.native_handle(), frame->data(), frame->size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return frame;
    closed_ = true;
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->terminate("write_failed"); });
    return nullptr;
  }
  auto written = static_cast<std::size_t>(sent);
  if (written < frame->size()) return std::make_shared<const EncodedFrame>(frame->substr(written), frame->origin);
  observe_delivery(*frame, std::chrono::system_clock::now());
  return nullptr;
}

void SseConnection::send_backlog(const std::vector<Frame>& frames) {
  if (frames.empty()) return;
  std::lock_guard lock(queue_mutex());
  if (closing_ || closed_) return;
  auto& box = outbox_locked();
  box.queued.insert(box.queued.end(), frames.begin(), frames.end());
  box.queued_exempt += static_cast<std::uint32_t>(frames.size());
  box.last_queued_live = false;
  schedule_flush_locked();
}

void SseConnection::close(Frame last) {
  std::lock_guard lock(queue_mutex());
  if (closing_ || closed_) return;
  if (last) {
    auto& box = outbox_locked();
    box.queued_bytes += static_cast<std::uint32_t>(last->size());
    box.queued.push_back(std::move(last));
    box.last_queued_live = false;
  }
  closing_ = true;
  schedule_flush_locked();
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->cut_if_not_closed_in_time(); });
}

// A closing stream takes no more frames, so send() no longer looks for a
// stall: a client that stopped reading would keep it (its registry entry, its
// place among the user's streams) until TCP gave up. What is queued gets ten
// stall graces (10 s by default) to go out; then the stream is cut. The timer
// exists only while a stream closes.
void SseConnection::cut_if_not_closed_in_time() {
  const auto limit = std::max<std::chrono::milliseconds>(10 * context_.limits.stall_grace, std::chrono::seconds{1});
  auto timer = std::make_shared<asio::steady_timer>(socket_.get_executor(), limit);
  timer->async_wait([self = shared_from_this(), timer](boost::system::error_code ec) {
    if (!ec && self->socket_.is_open()) self->terminate("slow_client");
  });
}

void SseConnection::schedule_flush_locked() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->flush(); });
}

void SseConnection::flush() {
  bool close_now = false;
  bool write = false;
  {
    std::lock_guard lock(queue_mutex());
    flush_scheduled_ = false;
    if (!socket_.is_open()) return;
    if (outbox_) {
      auto& box = *outbox_;
      // A write in flight calls flush() again when its batch is out.
      if (box.write_in_flight) return;
      box.writing.swap(box.queued);
      box.queued.clear();
      box.queued_bytes = 0;
      box.last_queued_live = false;
      box.exempt_in_batch = box.queued_exempt;
      box.queued_exempt = 0;
      box.writing_merged = box.queued_merged;
      box.queued_merged = 0;
      box.written = 0;
      write = !box.writing.empty();
      // From here a producer must queue behind this batch, not write past it.
      if (write) box.write_in_flight_since = std::chrono::steady_clock::now();
      else outbox_.reset();  // nothing queued, nothing in flight: the stream is idle
    }
    close_now = !write && closing_;
  }
  if (close_now) return terminate("closed_by_server");
  if (write) write_slice();
}

// A batch goes out in slices of about kWriteSlice bytes so that a client which
// reads slowly but steadily shows progress after each slice: the stall clock
// restarts with every slice, and only a client that takes no slice within the
// grace is judged stuck, however large the batch it fell behind on.
void SseConnection::write_slice() {
  constexpr std::size_t kWriteSlice = 64 * 1024;
  auto& box = *outbox_;  // a batch is being written: the outbox stays
  std::vector<asio::const_buffer> buffers;
  std::size_t bytes = 0;
  std::size_t end = box.written;
  while (end < box.writing.size() && (bytes == 0 || bytes + box.writing[end]->size() <= kWriteSlice)) {
    buffers.emplace_back(box.writing[end]->data(), box.writing[end]->size());
    bytes += box.writing[end]->size();
    ++end;
  }
  {
    std::lock_guard lock(queue_mutex());
    box.write_in_flight_since = std::chrono::steady_clock::now();
    auto unwritten = box.writing.size() - box.written;
    box.writing_count = static_cast<std::uint32_t>(unwritten - std::min<std::size_t>(unwritten, box.exempt_in_batch));
  }
  box.write_in_flight = true;
  // Completions run on the socket's executor, the strand.
  asio::async_write(socket_, buffers, [self = shared_from_this(), end](boost::system::error_code ec, std::size_t) {
    self->on_written(ec, end);
  });
}

void SseConnection::on_written(boost::system::error_code ec, std::size_t slice_end) {
  auto& box = *outbox_;  // freed only by flush(), which waits for this write
  box.write_in_flight = false;
  if (ec) return terminate("write_failed");
  auto now = std::chrono::system_clock::now();
  for (std::size_t i = box.written; i < slice_end; ++i) observe_delivery(*box.writing[i], now);
  box.written = static_cast<std::uint32_t>(slice_end);
  if (box.written < box.writing.size()) return write_slice();
  {
    std::lock_guard lock(queue_mutex());
    box.write_in_flight_since = {};
    box.writing_count = 0;
    box.writing_merged = 0;
  }
  // The next batch, or, with nothing queued, the outbox goes and the stream is idle.
  flush();
}

void SseConnection::watch_for_close() {
  if (!socket_.is_open()) return;
  socket_.async_wait(Socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) { self->on_readable(ec); });
}

void SseConnection::on_readable(boost::system::error_code ec) {
  if (!socket_.is_open()) return;  // terminated while this wait was queued
  if (ec) return terminate("read_failed");
  // A client sends nothing after its request; readable means it closed (or sent
  // junk, which we discard).
  char scratch[256];
  boost::system::error_code read_ec;
  socket_.non_blocking(true, read_ec);
  auto n = socket_.read_some(asio::buffer(scratch), read_ec);
  if (read_ec == asio::error::would_block) return watch_for_close();
  if (read_ec || n == 0) return terminate("client_closed");
  watch_for_close();
}

void SseConnection::terminate(const char* reason) {
  {
    // The socket closes under the lock: a producer may be writing to it directly.
    std::lock_guard lock(queue_mutex());
    closed_ = true;
    if (outbox_) {  // a write in flight keeps its batch until it completes
      outbox_->queued.clear();
      outbox_->queued_bytes = 0;
      outbox_->queued_exempt = 0;
      outbox_->queued_merged = 0;
    }
    if (!socket_.is_open()) return;
    boost::system::error_code ignored;
    if (std::string_view(reason) == "slow_client") {
      // Reset rather than close: what the kernel still holds for a client that
      // does not read would otherwise stay in memory, trickling out to a tiny
      // window, long after we gave up on it (nginx's reset_timedout_connection).
      socket_.set_option(asio::socket_base::linger(true, 0), ignored);
    } else {
      socket_.shutdown(Socket::shutdown_both, ignored);
    }
    socket_.close(ignored);
  }
  ended(reason);
}

// Once per stream, after its socket closed (or never opened).
void SseConnection::ended(const char* reason) {
  has_ended_.store(true, std::memory_order_release);  // before the detach it causes
  if (auto* metrics = context_.metrics)
    for (std::size_t i = 0; i < StreamMetrics::kEndReasons.size(); ++i)
      if (std::string_view(StreamMetrics::kEndReasons[i]) == reason) metrics->ended[i].add();
  context_.on_closed(shared_from_this(), reason);
  lease_.reset();
}

// A chunk's time from its timestamp to the kernel taking its bytes.
void SseConnection::observe_delivery(const EncodedFrame& frame, SystemTime now) const {
  if (auto* metrics = context_.metrics; metrics && frame.origin != SystemTime{})
    metrics->delivery.observe(std::chrono::duration<double>(now - frame.origin).count());
}

}  // namespace chat::sse
