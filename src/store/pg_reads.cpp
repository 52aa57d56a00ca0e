#include "store/pg_operations.hpp"

#include <algorithm>
#include <string>

#include "store/store_detail.hpp"

namespace chat::store::pg {

using boost::system::error_code;

namespace {

constexpr const char* kMessageColumns =
    "SELECT message_id, session_id, role, content, token_count, status, metadata::text, "
    "(extract(epoch FROM created_at) * 1000000)::bigint FROM messages ";

StoredMessage read_message(const Rows& r, int i) {
  return StoredMessage{r.text(i, 0),    r.text(i, 1), r.text(i, 2), r.text(i, 3),
                       r.integer(i, 4), r.text(i, 5), r.text(i, 6), detail::from_micros(r.integer(i, 7))};
}

// The cursor is a message id of this session; its position is (created_at, message_id).
error_code read_page(Connection& c, const std::string& session_id, std::size_t limit, const std::string& before,
                     MessagePage& page) {
  static const std::string kFirst = std::string(kMessageColumns) +
                                    "WHERE session_id = $1 ORDER BY created_at DESC, message_id COLLATE \"C\" DESC "
                                    "LIMIT $2";
  static const std::string kOlder =
      std::string(kMessageColumns) +
      "WHERE session_id = $1 AND (created_at, message_id COLLATE \"C\") < "
      "(SELECT created_at, message_id FROM messages WHERE message_id = $3) "
      "ORDER BY created_at DESC, message_id COLLATE \"C\" DESC LIMIT $2";
  Rows rows;
  auto n = std::to_string(limit + 1);  // one more than asked: tells whether an older page exists
  if (before.empty()) {
    if (auto ec = c.exec(kFirst.c_str(), {session_id, n}, &rows)) return ec;
  } else {
    Rows cursor;
    auto ec = c.exec("SELECT 1 FROM messages WHERE message_id = $1 AND session_id = $2", {before, session_id}, &cursor);
    if (ec) return ec;
    if (cursor.empty()) return Errc::not_found;
    if (auto ec2 = c.exec(kOlder.c_str(), {session_id, n, before}, &rows)) return ec2;
  }
  for (int i = 0; i < rows.size(); ++i) page.messages.push_back(read_message(rows, i));
  if (page.messages.size() > limit) {
    page.messages.pop_back();
    page.next_before = page.messages.back().message_id;
  }
  std::reverse(page.messages.begin(), page.messages.end());
  return {};
}

SessionSummary read_session(const Rows& r, int i) {
  return SessionSummary{r.text(i, 0),
                        r.text(i, 1),
                        r.text(i, 2),
                        r.text(i, 3),
                        r.text(i, 4),
                        detail::from_micros(r.integer(i, 5)),
                        detail::from_micros(r.integer(i, 6)),
                        detail::from_micros(r.integer(i, 7))};
}

}  // namespace

error_code read_owner(Connection& c, const char* sql, const std::string& session_id,
                      std::optional<std::string>& owner) {
  Rows rows;
  auto ec = c.exec(sql, {session_id}, &rows);
  owner = !ec && !rows.empty() ? std::optional(rows.text(0, 0)) : std::nullopt;
  return ec;
}

error_code check_owner(Connection& c, const char* sql, const std::string& session_id, const std::string& user_id) {
  std::optional<std::string> owner;
  if (auto ec = read_owner(c, sql, session_id, owner)) return ec;
  if (!owner) return Errc::not_found;
  return *owner == user_id ? error_code{} : make_error_code(Errc::forbidden);
}

error_code sessions_of(Connection& c, const std::string& user_id, std::size_t limit,
                       const std::optional<SessionCursor>& before, SessionPage& page) {
  limit = detail::clamp_limit(limit);
  // Statements are prepared once per connection, keyed by their text's
  // address: these stay put for the program's life.
  static const std::string kColumns =
      "SELECT session_id, user_id, title, ai_provider, model_name, (extract(epoch FROM created_at) * 1000000)::bigint, "
      "(extract(epoch FROM updated_at) * 1000000)::bigint, (extract(epoch FROM last_message_at) * 1000000)::bigint "
      "FROM chat_sessions WHERE user_id = $1 ";
  static const std::string kOrder = "ORDER BY last_message_at DESC, session_id COLLATE \"C\" DESC LIMIT $2";
  static const std::string kNewest = kColumns + kOrder;
  // The cursor's microseconds back to a timestamp exactly (integer interval
  // arithmetic), so the index on (user_id, last_message_at) serves the page.
  static const std::string kOlder =
      kColumns +
      "AND (last_message_at, session_id COLLATE \"C\") < "
      "('epoch'::timestamptz + $3::bigint * interval '1 microsecond', $4) " + kOrder;
  const auto fetch = std::to_string(limit + 1);  // one more: is there an older page?
  Rows rows;
  auto ec = before ? c.exec(kOlder.c_str(),
                            {user_id, fetch, std::to_string(detail::to_micros(before->last_message_at)),
                             before->session_id},
                            &rows)
                   : c.exec(kNewest.c_str(), {user_id, fetch}, &rows);
  for (int i = 0; i < rows.size(); ++i) page.sessions.push_back(read_session(rows, i));
  detail::cut_session_page(page, limit);
  return ec;
}

error_code page_of(Connection& c, const std::string& session_id, const std::string& user_id, std::size_t limit,
                   const std::string& before, MessagePage& page) {
  // One snapshot for the owner check, the cursor and the page.
  Transaction tx(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (tx.error()) return tx.error();
  Rows session;
  if (auto ec = c.exec(kOwnerAndTitle, {session_id}, &session)) return ec;
  if (session.empty()) return Errc::not_found;
  if (session.text(0, 0) != user_id) return Errc::forbidden;
  page.title = session.text(0, 1);
  if (auto ec = read_page(c, session_id, detail::clamp_limit(limit), before, page)) return ec;
  return tx.commit();
}

}  // namespace chat::store::pg
