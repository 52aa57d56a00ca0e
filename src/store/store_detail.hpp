#pragma once
// Rules both stores share, so SQLite and PostgreSQL behave the same behind the
// MessageStore interface. Internal to src/store.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>

#include "common/time.hpp"
#include "log/log.hpp"
#include "store/message_store.hpp"

namespace chat::store::detail {

// Largest page the list calls return, whatever the caller asks for.
inline constexpr std::size_t kMaxPage = 1000;

// Pages and session lists hold at least one row: a limit of 0 would make a
// cursor that never advances.
inline std::size_t clamp_limit(std::size_t limit) { return std::clamp<std::size_t>(limit, 1, kMaxPage); }

// Timestamps travel as integer microseconds since the Unix epoch: exact in both
// databases and free of time-zone and date-style settings.
inline std::int64_t to_micros(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
inline SystemTime from_micros(std::int64_t us) {
  return SystemTime{std::chrono::duration_cast<SystemTime::duration>(std::chrono::microseconds{us})};
}

// A page read with one row more than `limit`: that row only tells that an
// older page exists, which starts after the page's last session.
inline void cut_session_page(SessionPage& page, std::size_t limit) {
  if (page.sessions.size() <= limit) return;
  page.sessions.resize(limit);
  page.next_before = SessionCursor{page.sessions.back().last_message_at, page.sessions.back().session_id};
}

// A reply without a status is a finished one, and metadata is always a JSON object.
inline AssistantMessage normalised(AssistantMessage m) {
  if (m.status.empty()) m.status = "complete";
  if (m.metadata_json.empty()) m.metadata_json = "{}";
  return m;
}

// A reply written later than its call (retry queue, spill journal): its
// callback has long completed, so the outcome is only logged.
inline void log_deferred_write(const std::string& message_id, boost::system::error_code ec) {
  if (ec) {
    log::error("store_deferred_write_failed", {{"message_id", message_id}, {"error", ec.message()}});
  } else {
    log::info("store_deferred_write_done", {{"message_id", message_id}});
  }
}

// A throwing callback must not take a store thread (and every later job) down with it.
template <class Callback, class... Args>
void invoke(const Callback& done, Args&&... args) noexcept {
  if (!done) return;
  try {
    done(std::forward<Args>(args)...);
  } catch (const std::exception& e) {
    log::error("store_callback_threw", {{"what", e.what()}});
  } catch (...) {
    log::error("store_callback_threw", {{"what", "unknown exception"}});
  }
}

}  // namespace chat::store::detail
