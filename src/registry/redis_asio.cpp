#include "registry/redis_asio.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>

#include <memory>

namespace asio = boost::asio;

namespace chat::registry {
namespace {

// What hiredis's ev.data points to. Everything here runs on the strand.
class AsioEvents : public std::enable_shared_from_this<AsioEvents> {
 public:
  AsioEvents(redisAsyncContext* context, const RedisStrand& strand)
      : context_(context), socket_(strand, context->c.fd) {}

  // hiredis holds this reference through ev.data until it calls cleanup.
  void keep_alive() { self_ = shared_from_this(); }

  void add_read() {
    reading_ = true;
    arm(asio::posix::stream_descriptor::wait_read, read_waiting_);
  }
  void del_read() { reading_ = false; }
  void add_write() {
    writing_ = true;
    arm(asio::posix::stream_descriptor::wait_write, write_waiting_);
  }
  void del_write() { writing_ = false; }

  // hiredis is about to close the socket and free the context.
  void cleanup() {
    detach_hooks();
    context_ = nullptr;
    reading_ = writing_ = false;
    // Cancels both waits (their handlers see operation_aborted) and hands the
    // descriptor back without closing it: it is hiredis's to close.
    socket_.release();
    auto last_reference = std::move(self_);
  }

 private:
  // A wait stays armed after del_read/del_write and is ignored when it fires:
  // cancelling one direction would cancel the other with it.
  void arm(asio::posix::stream_descriptor::wait_type type, bool& waiting) {
    if (waiting || context_ == nullptr) return;
    waiting = true;
    socket_.async_wait(type, [self = shared_from_this(), type](boost::system::error_code ec) {
      self->on_ready(type, ec);
    });
  }

  void on_ready(asio::posix::stream_descriptor::wait_type type, boost::system::error_code ec) {
    bool read = type == asio::posix::stream_descriptor::wait_read;
    (read ? read_waiting_ : write_waiting_) = false;
    if (ec == asio::error::operation_aborted || context_ == nullptr) return;
    if (!(read ? reading_ : writing_)) return;
    // Any other error: let hiredis find it on the socket and disconnect.
    if (read) redisAsyncHandleRead(context_);
    else redisAsyncHandleWrite(context_);
    // The call may have freed the context (cleanup ran); otherwise hiredis
    // normally re-armed through the hooks already, and arm() is idempotent.
    if (context_ != nullptr && (read ? reading_ : writing_)) arm(type, read ? read_waiting_ : write_waiting_);
  }

  // After cleanup the context is gone; no hook may reach this object again.
  void detach_hooks() {
    if (context_ == nullptr) return;
    context_->ev = {};
  }

  redisAsyncContext* context_;
  asio::posix::stream_descriptor socket_;
  bool reading_ = false;
  bool writing_ = false;
  bool read_waiting_ = false;
  bool write_waiting_ = false;
  std::shared_ptr<AsioEvents> self_;
};

AsioEvents& events(void* data) { return *static_cast<AsioEvents*>(data); }

}  // namespace

bool attach_to_asio(redisAsyncContext* context, const RedisStrand& strand) {
  if (context->ev.data != nullptr) return false;
  auto adapter = std::make_shared<AsioEvents>(context, strand);
  adapter->keep_alive();
  context->ev.data = adapter.get();
  context->ev.addRead = [](void* d) { events(d).add_read(); };
  context->ev.delRead = [](void* d) { events(d).del_read(); };
  context->ev.addWrite = [](void* d) { events(d).add_write(); };
  context->ev.delWrite = [](void* d) { events(d).del_write(); };
  context->ev.cleanup = [](void* d) { events(d).cleanup(); };
  return true;
}

}  // namespace chat::registry
