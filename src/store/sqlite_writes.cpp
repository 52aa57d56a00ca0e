#include "store/sqlite_operations.hpp"

#include <string>

#include "store/store_detail.hpp"

namespace chat::store::sqlite {

using boost::system::error_code;

namespace {

// Creates the session on first use, titled after its first message.
error_code claim_session(Connection& db, const NewUserMessage& m, std::int64_t at) {
  auto ec = db.query(
                  "INSERT INTO chat_sessions (session_id, user_id, title, ai_provider, model_name, created_at, "
                  "updated_at, last_message_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6) "
                  "ON CONFLICT (session_id) DO NOTHING")
                .bind(m.session_id)
                .bind(m.user_id)
                .bind(make_title(m.content))
                .bind(m.ai_provider)
                .bind(m.model)
                .bind(at)
                .run();
  if (ec) return ec;
  if (auto owned = check_owner(db, m.session_id, m.user_id)) return owned;
  // A session claimed before its first message has no title yet.
  return db.query("UPDATE chat_sessions SET title = ?2 WHERE session_id = ?1 AND title = ''")
      .bind(m.session_id)
      .bind(make_title(m.content))
      .run();
}

// A new message moves the session's clocks forward (never back: replies of two
// pods may land out of order) and records the provider/model last asked for.
error_code touch_session(Connection& db, const std::string& session_id, std::int64_t at, const std::string& provider,
                         const std::string& model) {
  return db.query(
               "UPDATE chat_sessions SET updated_at = max(updated_at, ?2), last_message_at = max(last_message_at, ?2), "
               "ai_provider = coalesce(nullif(?3, ''), ai_provider), model_name = coalesce(nullif(?4, ''), model_name) "
               "WHERE session_id = ?1")
      .bind(session_id)
      .bind(at)
      .bind(provider)
      .bind(model)
      .run();
}

constexpr const char* kInsertMessage =
    "INSERT INTO messages (message_id, session_id, role, content, token_count, status, metadata, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (message_id) DO NOTHING";
// The first write of a reply wins, but for one cut short (incomplete: its
// buffer evicted, the pod's shutdown) and written again whole by a pod that
// read it from the chunk log.
constexpr const char* kInsertReply =
    "INSERT INTO messages (message_id, session_id, role, content, token_count, status, metadata, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (message_id) DO UPDATE SET content = excluded.content, token_count = excluded.token_count, "
    "status = excluded.status, metadata = excluded.metadata WHERE messages.status = 'incomplete' AND "
    "excluded.status <> 'incomplete' AND messages.role = 'assistant' AND messages.session_id = excluded.session_id";

// The messages before the new one that the worker sends as context, oldest first.
error_code read_history(Connection& db, const NewUserMessage& m, unsigned turns,
                        std::vector<protocol::HistoryEntry>& out) {
  if (turns == 0) return {};
  auto q = db.query(
      "SELECT role, content FROM (SELECT role, content, created_at, message_id FROM messages "
      "WHERE session_id = ?1 AND message_id <> ?2 ORDER BY created_at DESC, message_id DESC LIMIT ?3) "
      "ORDER BY created_at, message_id");
  q.bind(m.session_id).bind(m.message_id).bind(std::int64_t{turns});
  while (q.next()) out.push_back({q.text(0), q.text(1)});
  return q.error();
}

}  // namespace

error_code accept(Connection& db, const NewUserMessage& m, unsigned turns, std::vector<protocol::HistoryEntry>& out) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  auto at = detail::to_micros(m.created_at);
  if (auto ec = claim_session(db, m, at)) return ec;
  if (auto ec = read_history(db, m, turns, out)) return ec;
  auto ec = db.query(kInsertMessage)
                .bind(m.message_id)
                .bind(m.session_id)
                .bind("user")
                .bind(m.content)
                .bind(std::int64_t{0})
                .bind("complete")
                .bind("{}")
                .bind(at)
                .run();
  if (ec) return ec;
  if (auto ec2 = touch_session(db, m.session_id, at, m.ai_provider, m.model)) return ec2;
  return tx.commit();
}

error_code reserve(Connection& db, const std::string& session_id, const std::string& user_id, std::int64_t at) {
  // Streams reconnect often: a session that exists costs a read, not a write.
  std::optional<std::string> owner;
  if (auto ec = read_owner(db, session_id, owner)) return ec;
  if (owner) return *owner == user_id ? error_code{} : make_error_code(Errc::forbidden);
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  auto ec = db.query(
                  "INSERT INTO chat_sessions (session_id, user_id, title, ai_provider, model_name, created_at, "
                  "updated_at, last_message_at) VALUES (?1, ?2, '', '', '', ?3, ?3, ?3) "
                  "ON CONFLICT (session_id) DO NOTHING")
                .bind(session_id)
                .bind(user_id)
                .bind(at)
                .run();
  if (ec) return ec;
  if (auto owned = check_owner(db, session_id, user_id)) return owned;
  return tx.commit();
}

// Insert-if-absent and the session's clocks in one transaction: the first write
// wins, a repeat changes nothing.
error_code save_assistant(Connection& db, const AssistantMessage& m) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  std::optional<std::string> owner;
  if (auto ec = read_owner(db, m.session_id, owner)) return ec;
  // Deleted while the reply streamed, or deleted and made again by someone else.
  if (!owner || (!m.user_id.empty() && *owner != m.user_id)) return Errc::not_found;
  auto at = detail::to_micros(m.created_at);
  auto ec = db.query(kInsertReply)
                .bind(m.message_id)
                .bind(m.session_id)
                .bind("assistant")
                .bind(m.content)
                .bind(m.token_count)
                .bind(m.status)
                .bind(m.metadata_json)
                .bind(at)
                .run();
  if (ec) return ec;
  if (db.changes() == 1) {
    if (auto ec2 = touch_session(db, m.session_id, at, {}, {})) return ec2;
  }
  return tx.commit();
}

// Undoes accept: the user message goes, and so does a session it alone created.
error_code discard(Connection& db, const std::string& message_id) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  std::string session_id;
  {
    auto q = db.query("SELECT session_id FROM messages WHERE message_id = ?1 AND role = 'user'");
    if (!q.bind(message_id).next()) return q.error() ? q.error() : make_error_code(Errc::not_found);
    session_id = q.text(0);
  }  // reset before the deletes below
  if (auto ec = db.query("DELETE FROM messages WHERE message_id = ?1").bind(message_id).run()) return ec;
  auto ec = db.query("DELETE FROM chat_sessions WHERE session_id = ?1 AND NOT EXISTS "
                     "(SELECT 1 FROM messages WHERE session_id = ?1)")
                .bind(session_id)
                .run();
  if (ec) return ec;
  ec = db.query("UPDATE chat_sessions SET last_message_at = "
                "(SELECT max(created_at) FROM messages WHERE session_id = ?1) WHERE session_id = ?1")
           .bind(session_id)
           .run();
  return ec ? ec : tx.commit();
}

error_code remove_session(Connection& db, const std::string& session_id, const std::string& user_id) {
  Transaction tx(db, Transaction::Mode::write);
  if (tx.error()) return tx.error();
  if (auto ec = check_owner(db, session_id, user_id)) return ec;
  if (auto ec = db.query("DELETE FROM messages WHERE session_id = ?1").bind(session_id).run()) return ec;
  if (auto ec = db.query("DELETE FROM chat_sessions WHERE session_id = ?1").bind(session_id).run()) return ec;
  return tx.commit();
}

}  // namespace chat::store::sqlite
