#include "store/sqlite_operations.hpp"

#include <algorithm>
#include <string>

#include "store/store_detail.hpp"

namespace chat::store::sqlite {

using boost::system::error_code;

namespace {

SessionSummary read_session(const Query& q) {
  return SessionSummary{q.text(0),  q.text(1), q.text(2), q.text(3), q.text(4), detail::from_micros(q.integer(5)),
                        detail::from_micros(q.integer(6)), detail::from_micros(q.integer(7))};
}

StoredMessage read_message(const Query& q) {
  return StoredMessage{q.text(0),    q.text(1), q.text(2), q.text(3),
                       q.integer(4), q.text(5), q.text(6), detail::from_micros(q.integer(7))};
}

// The cursor is a message id; its position is (created_at, message_id).
error_code cursor_time(Connection& db, const std::string& session_id, const std::string& before, std::int64_t& at) {
  auto q = db.query("SELECT created_at FROM messages WHERE message_id = ?1 AND session_id = ?2");
  if (q.bind(before).bind(session_id).next()) {
    at = q.integer(0);
    return {};
  }
  return q.error() ? q.error() : make_error_code(Errc::not_found);
}

// Reads the `limit` newest messages older than the cursor, plus one more to
// learn whether an older page exists.
error_code read_page(Connection& db, const std::string& session_id, std::size_t limit, const std::string& before,
                     MessagePage& page) {
  constexpr const char* kColumns =
      "SELECT message_id, session_id, role, content, token_count, status, metadata, created_at FROM messages ";
  std::int64_t at = 0;
  if (!before.empty()) {
    if (auto ec = cursor_time(db, session_id, before, at)) return ec;
  }
  auto q = db.query(std::string(kColumns) +
                    (before.empty() ? "WHERE session_id = ?1 ORDER BY created_at DESC, message_id DESC LIMIT ?2"
                                    : "WHERE session_id = ?1 AND (created_at, message_id) < (?3, ?4) "
                                      "ORDER BY created_at DESC, message_id DESC LIMIT ?2"));
  q.bind(session_id).bind(static_cast<std::int64_t>(limit + 1));
  if (!before.empty()) q.bind(at).bind(before);
  while (q.next()) page.messages.push_back(read_message(q));
  if (q.error()) return q.error();
  if (page.messages.size() > limit) {
    page.messages.pop_back();
    page.next_before = page.messages.back().message_id;
  }
  std::reverse(page.messages.begin(), page.messages.end());
  return {};
}

}  // namespace

error_code read_owner(Connection& db, const std::string& session_id, std::optional<std::string>& owner) {
  auto q = db.query("SELECT user_id FROM chat_sessions WHERE session_id = ?1");
  owner = q.bind(session_id).next() ? std::optional(q.text(0)) : std::nullopt;
  return q.error();
}

error_code check_owner(Connection& db, const std::string& session_id, const std::string& user_id) {
  std::optional<std::string> owner;
  if (auto ec = read_owner(db, session_id, owner)) return ec;
  if (!owner) return Errc::not_found;
  return *owner == user_id ? error_code{} : make_error_code(Errc::forbidden);
}

error_code sessions_of(Connection& db, const std::string& user_id, std::size_t limit,
                       const std::optional<SessionCursor>& before, SessionPage& page) {
  limit = detail::clamp_limit(limit);
  auto q = db.query(
      std::string("SELECT session_id, user_id, title, ai_provider, model_name, created_at, updated_at, last_message_at "
                  "FROM chat_sessions WHERE user_id = ?1 ") +
      (before ? "AND (last_message_at, session_id) < (?3, ?4) " : "") +
      "ORDER BY last_message_at DESC, session_id DESC LIMIT ?2");
  q.bind(user_id).bind(static_cast<std::int64_t>(limit + 1));  // one more: is there an older page?
  if (before) q.bind(detail::to_micros(before->last_message_at)).bind(before->session_id);
  while (q.next()) page.sessions.push_back(read_session(q));
  detail::cut_session_page(page, limit);
  return q.error();
}

error_code page_of(Connection& db, const std::string& session_id, const std::string& user_id, std::size_t limit,
                   const std::string& before, MessagePage& page) {
  Transaction tx(db, Transaction::Mode::read);  // one snapshot for owner, cursor and page
  if (tx.error()) return tx.error();
  auto q = db.query("SELECT user_id, title FROM chat_sessions WHERE session_id = ?1");
  if (!q.bind(session_id).next()) return q.error() ? q.error() : make_error_code(Errc::not_found);
  if (q.text(0) != user_id) return Errc::forbidden;
  page.title = q.text(1);
  return read_page(db, session_id, detail::clamp_limit(limit), before, page);
}

}  // namespace chat::store::sqlite
