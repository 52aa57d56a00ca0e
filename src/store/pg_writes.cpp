#include "store/pg_operations.hpp"

#include <string>

#include "common/time.hpp"

namespace chat::store::pg {

using boost::system::error_code;

namespace {

std::string ts(SystemTime t) { return to_rfc3339(t); }

error_code claim_session(Connection& c, const NewUserMessage& m) {
  auto ec = c.exec(
      "INSERT INTO chat_sessions (session_id, user_id, title, ai_provider, model_name, created_at, updated_at, "
      "last_message_at) VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $6::timestamptz, $6::timestamptz) "
      "ON CONFLICT (session_id) DO NOTHING",
      {m.session_id, m.user_id, make_title(m.content), m.ai_provider, m.model, ts(m.created_at)});
  if (ec) return ec;
  if (auto owned = check_owner(c, kOwnerForMessage, m.session_id, m.user_id)) return owned;
  // A session claimed before its first message has no title yet.
  return c.exec("UPDATE chat_sessions SET title = $2 WHERE session_id = $1 AND title = ''",
                {m.session_id, make_title(m.content)});
}

// Clocks move forward only: replies of two pods may land out of order.
error_code touch_session(Connection& c, const std::string& session_id, SystemTime at, std::string_view provider,
                         std::string_view model) {
  return c.exec(
      "UPDATE chat_sessions SET updated_at = greatest(updated_at, $2::timestamptz), "
      "last_message_at = greatest(last_message_at, $2::timestamptz), "
      "ai_provider = coalesce(nullif($3, ''), ai_provider), model_name = coalesce(nullif($4, ''), model_name) "
      "WHERE session_id = $1",
      {session_id, ts(at), provider, model});
}

error_code read_history(Connection& c, const NewUserMessage& m, unsigned turns,
                        std::vector<protocol::HistoryEntry>& out) {
  if (turns == 0) return {};
  Rows rows;
  auto ec = c.exec(
      "SELECT role, content FROM (SELECT role, content, created_at, message_id FROM messages "
      "WHERE session_id = $1 AND message_id <> $2 ORDER BY created_at DESC, message_id COLLATE \"C\" DESC LIMIT $3) "
      "AS recent ORDER BY created_at, message_id COLLATE \"C\"",
      {m.session_id, m.message_id, std::to_string(turns)}, &rows);
  for (int i = 0; i < rows.size(); ++i) out.push_back({rows.text(i, 0), rows.text(i, 1)});
  return ec;
}

constexpr const char* kInsertMessage =
    "INSERT INTO messages (message_id, session_id, role, content, token_count, status, metadata, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::timestamptz) ON CONFLICT (message_id) DO NOTHING";
// The first write of a reply wins, but for one cut short (incomplete: its
// buffer evicted, the pod's shutdown) and written again whole by a pod that
// read it from the chunk log.
constexpr const char* kInsertReply =
    "INSERT INTO messages (message_id, session_id, role, content, token_count, status, metadata, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::timestamptz) ON CONFLICT (message_id) DO UPDATE SET content = excluded.content, token_count = excluded.token_count, "
    "status = excluded.status, metadata = excluded.metadata WHERE messages.status = 'incomplete' AND "
    "excluded.status <> 'incomplete' AND messages.role = 'assistant' AND messages.session_id = excluded.session_id";

}  // namespace

error_code reserve(Connection& c, const std::string& session_id, const std::string& user_id, SystemTime at) {
  // Streams reconnect often: a session that exists costs a read, not a write.
  std::optional<std::string> owner;
  if (auto ec = read_owner(c, kOwner, session_id, owner)) return ec;
  if (owner) return *owner == user_id ? error_code{} : make_error_code(Errc::forbidden);
  auto ec = c.exec(
      "INSERT INTO chat_sessions (session_id, user_id, title, ai_provider, model_name, created_at, updated_at, "
      "last_message_at) VALUES ($1, $2, '', '', '', $3::timestamptz, $3::timestamptz, $3::timestamptz) "
      "ON CONFLICT (session_id) DO NOTHING",
      {session_id, user_id, ts(at)});
  return ec ? ec : check_owner(c, kOwner, session_id, user_id);
}

error_code accept(Connection& c, const NewUserMessage& m, unsigned turns, std::vector<protocol::HistoryEntry>& out) {
  Transaction tx(c);
  if (tx.error()) return tx.error();
  if (auto ec = claim_session(c, m)) return ec;
  if (auto ec = read_history(c, m, turns, out)) return ec;
  auto ec = c.exec(kInsertMessage,
                   {m.message_id, m.session_id, "user", m.content, "0", "complete", "{}", ts(m.created_at)});
  if (ec) return ec;
  if (auto ec2 = touch_session(c, m.session_id, m.created_at, m.ai_provider, m.model)) return ec2;
  return tx.commit();
}

// Insert-if-absent and the session's clocks in one transaction. A session that
// is gone (deleted while the reply streamed) is a foreign-key error: not_found.
error_code save_assistant(Connection& c, const AssistantMessage& m) {
  Transaction tx(c);
  if (tx.error()) return tx.error();
  if (!m.user_id.empty()) {
    // Locked as a user message's session is: read without the lock, the session
    // could be deleted and made again by another user before the INSERT, and
    // the reply would land in that user's session.
    auto owned = check_owner(c, kOwnerForMessage, m.session_id, m.user_id);
    if (owned == Errc::forbidden) return Errc::not_found;  // the session was made again by someone else
    if (owned) return owned;
  }
  Rows rows;
  auto ec = c.exec(kInsertReply,
                   {m.message_id, m.session_id, "assistant", m.content, std::to_string(m.token_count), m.status,
                    m.metadata_json, ts(m.created_at)},
                   &rows);
  if (ec) return ec;
  if (rows.affected() == 1) {
    if (auto ec2 = touch_session(c, m.session_id, m.created_at, {}, {})) return ec2;
  }
  return tx.commit();
}

// Undoes accept: the user message goes, and so does a session it alone created.
// The session row is locked first so a message accepted meanwhile is seen.
error_code discard(Connection& c, const std::string& message_id) {
  Transaction tx(c);
  if (tx.error()) return tx.error();
  Rows rows;
  if (auto ec = c.exec("SELECT session_id FROM messages WHERE message_id = $1 AND role = 'user'", {message_id}, &rows))
    return ec;
  if (rows.empty()) return Errc::not_found;
  std::string session_id = rows.text(0, 0);
  std::optional<std::string> owner;
  if (auto ec = read_owner(c, kOwnerForDelete, session_id, owner)) return ec;
  if (auto ec = c.exec("DELETE FROM messages WHERE message_id = $1", {message_id})) return ec;
  for (const char* sql : {"DELETE FROM chat_sessions WHERE session_id = $1 AND "
                          "NOT EXISTS (SELECT 1 FROM messages WHERE session_id = $1)",
                          "UPDATE chat_sessions SET last_message_at = "
                          "(SELECT max(created_at) FROM messages WHERE session_id = $1) WHERE session_id = $1"}) {
    if (auto ec = c.exec(sql, {session_id})) return ec;
  }
  return tx.commit();
}

error_code remove_session(Connection& c, const std::string& session_id, const std::string& user_id) {
  Transaction tx(c);
  if (tx.error()) return tx.error();
  if (auto ec = check_owner(c, kOwnerForDelete, session_id, user_id)) return ec;
  if (auto ec = c.exec("DELETE FROM messages WHERE session_id = $1", {session_id})) return ec;
  if (auto ec = c.exec("DELETE FROM chat_sessions WHERE session_id = $1", {session_id})) return ec;
  return tx.commit();
}

}  // namespace chat::store::pg
