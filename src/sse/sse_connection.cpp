#include "sse/sse_connection.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;

namespace chat::sse {

SseConnection::SseConnection(Socket socket, std::string connection_id, std::string session_id, QueueLimits limits,
                             StreamMetrics* metrics)
    : socket_(std::move(socket)),
      strand_(socket_.get_executor()),
      connection_id_(std::move(connection_id)),
      session_id_(std::move(session_id)),
      limits_(limits),
      metrics_(metrics) {}

void SseConnection::start(std::string head, std::vector<Frame> first, ClosedHandler on_closed) {
  on_closed_ = std::move(on_closed);
  // A reply can burst faster than a reading client drains a fresh connection's
  // small send buffer; let the kernel absorb a burst so the queue limit only
  // catches clients that stop reading. Costs nothing while the stream is idle.
  boost::system::error_code ignored;
  socket_.set_option(asio::socket_base::send_buffer_size(static_cast<int>(limits_.socket_send_buffer)), ignored);
  {
    std::lock_guard lock(queue_mutex_);
    // The head goes out first, ahead of anything a producer queues meanwhile.
    queued_.insert(queued_.begin(), raw_frame(std::move(head)));
    for (auto& f : first) queued_.push_back(std::move(f));
    queued_exempt_ = queued_.size();
    schedule_flush_locked();
  }
  asio::post(strand_, [self = shared_from_this()] { self->watch_for_close(); });
}

void SseConnection::send(Frame frame) {
  std::lock_guard lock(queue_mutex_);
  if (closing_ || closed_) return;
  queued_bytes_ += frame->size();
  queued_.push_back(std::move(frame));
  if (is_stuck_locked()) {
    // The client stopped reading: drop it rather than let it hold memory or
    // anyone else's progress.
    closed_ = true;
    asio::post(strand_, [self = shared_from_this()] { self->terminate("slow_client"); });
    return;
  }
  schedule_flush_locked();
}

bool SseConnection::is_stuck_locked() const {
  if (queued_bytes_ > limits_.max_bytes) return true;
  // Frames the kernel has not taken yet: the write in flight and the queue.
  // Over the event limit, a client that still takes our writes gets a moment to
  // catch up with a burst; one whose write has hung that long is not reading.
  return writing_count_ + queued_.size() - queued_exempt_ > limits_.max_events && write_in_flight_since_ &&
         std::chrono::steady_clock::now() - *write_in_flight_since_ > limits_.stall_grace;
}

void SseConnection::send_backlog(const std::vector<Frame>& frames) {
  if (frames.empty()) return;
  std::lock_guard lock(queue_mutex_);
  if (closing_ || closed_) return;
  queued_.insert(queued_.end(), frames.begin(), frames.end());
  queued_exempt_ += frames.size();
  schedule_flush_locked();
}

void SseConnection::close(Frame last) {
  std::lock_guard lock(queue_mutex_);
  if (closing_ || closed_) return;
  if (last) {
    queued_bytes_ += last->size();
    queued_.push_back(std::move(last));
  }
  closing_ = true;
  schedule_flush_locked();
}

void SseConnection::schedule_flush_locked() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  asio::post(strand_, [self = shared_from_this()] { self->flush(); });
}

void SseConnection::flush() {
  bool close_now = false;
  {
    std::lock_guard lock(queue_mutex_);
    flush_scheduled_ = false;
    // A write in flight calls flush() again when it completes.
    if (write_in_flight_ || !socket_.is_open()) return;
    writing_.swap(queued_);
    queued_.clear();
    queued_bytes_ = 0;
    auto exempt_in_batch = queued_exempt_;
    queued_exempt_ = 0;
    close_now = writing_.empty() && closing_;
    if (!writing_.empty()) write_in_flight_since_ = std::chrono::steady_clock::now();
    writing_count_ = writing_.size() - std::min(writing_.size(), exempt_in_batch);
  }
  if (close_now) return terminate("closed_by_server");
  if (writing_.empty()) return;
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(writing_.size());
  for (const auto& f : writing_) buffers.emplace_back(f->data(), f->size());
  write_in_flight_ = true;
  asio::async_write(socket_, buffers,
                    asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                      self->on_written(ec);
                    }));
}

void SseConnection::on_written(boost::system::error_code ec) {
  write_in_flight_ = false;
  {
    std::lock_guard lock(queue_mutex_);
    write_in_flight_since_.reset();
    writing_count_ = 0;
  }
  if (!ec && metrics_) {
    auto now = std::chrono::system_clock::now();
    for (const auto& f : writing_)
      if (f->origin != SystemTime{})
        metrics_->delivery.observe(std::chrono::duration<double>(now - f->origin).count());
  }
  writing_.clear();
  if (writing_.capacity() > 64) writing_.shrink_to_fit();  // a burst must not pin memory on an idle stream
  if (ec) return terminate("write_failed");
  flush();
}

void SseConnection::watch_for_close() {
  if (!socket_.is_open()) return;
  socket_.async_wait(Socket::wait_read, asio::bind_executor(strand_, [self = shared_from_this()](boost::system::error_code ec) {
                       self->on_readable(ec);
                     }));
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
    std::lock_guard lock(queue_mutex_);
    closed_ = true;
    queued_.clear();
    queued_bytes_ = 0;
    queued_exempt_ = 0;
  }
  if (!socket_.is_open()) return;
  if (metrics_)
    for (std::size_t i = 0; i < StreamMetrics::kEndReasons.size(); ++i)
      if (std::string_view(StreamMetrics::kEndReasons[i]) == reason) metrics_->ended[i].add();
  boost::system::error_code ignored;
  socket_.shutdown(Socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (auto handler = std::move(on_closed_)) handler(shared_from_this(), reason);
}

}  // namespace chat::sse
