#include "store/pg_link.hpp"

#include <algorithm>

#include "log/log.hpp"
#include "store/message_store.hpp"

namespace chat::store::pg {

bool Link::connect_now() {
  if (conn_.connect()) {
    backoff_ = kMinBackoff;
    mark_up();
    if (pool_ != nullptr) pool_->last_connected.store(std::chrono::steady_clock::now().time_since_epoch().count());
    return true;
  }
  mark_down();
  log::debug("store_pg_connect_failed", {{"error", conn_.error_message()}});
  failed_at_ = std::chrono::steady_clock::now();
  next_attempt_ = failed_at_ + backoff_;
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  return false;
}

bool Link::ensure_connected() {
  if (conn_.ok()) return true;
  // Inside the backoff window the job fails at once: during an outage a queue of
  // jobs must not each wait for a connection attempt. Once another link has
  // connected since this one failed, the outage is over (and /health says so),
  // so the window no longer applies: a link whose last attempt fell in the
  // server's recovery would refuse jobs for 2 s.
  if (std::chrono::steady_clock::now() < next_attempt_ && !reconnected_since_my_failure()) return false;
  return connect_now();
}

bool Link::reconnected_since_my_failure() const {
  return pool_ != nullptr && pool_->last_connected.load() > failed_at_.time_since_epoch().count();
}

boost::system::error_code Link::run(const Attempt& attempt) {
  if (!ensure_connected()) return Errc::unavailable;
  auto ec = attempt(conn_);
  // The server may report its shutdown (57P01) before libpq has seen the socket close.
  if (conn_.ok() && ec != Errc::unavailable) return ec;
  mark_down();
  if (!connect_now()) return Errc::unavailable;
  ec = attempt(conn_);
  if (!conn_.ok()) mark_down();
  return ec;
}

void Link::idle() {
  if (conn_.ok()) {
    if (!conn_.poll()) mark_down();
  } else {
    ensure_connected();
  }
}

void Link::close() {
  if (up_ && pool_ != nullptr) pool_->links_up.fetch_sub(1);
  up_ = false;
  conn_.close();
}

void Link::mark_up() {
  if (up_) return;
  up_ = true;
  if (pool_ != nullptr) pool_->links_up.fetch_add(1);
  log::info("store_pg_connected", {});
}

void Link::mark_down() {
  if (up_) {
    up_ = false;
    if (pool_ != nullptr) pool_->links_up.fetch_sub(1);
    log::warn("store_pg_connection_lost", {{"error", conn_.error_message()}});
  }
  conn_.close();
}

}  // namespace chat::store::pg
