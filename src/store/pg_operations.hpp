#pragma once
// PostgresStore's statements, one function per store operation. Each is one
// attempt in its own transaction that starts from scratch, so Link::run may run
// it again on a fresh connection. Writes are in pg_writes.cpp, reads (and the
// owner checks the writes share) in pg_reads.cpp.
//
// Times go in as RFC 3339 text with microseconds and "Z" (exact, independent of
// the session's TimeZone) and come out as integer microseconds (extract() is
// numeric since PostgreSQL 14, so exact too). Ids are ordered bytewise
// (COLLATE "C"), as in SQLite, whatever the database's collation.

#include <boost/system/error_code.hpp>

#include <optional>
#include <string>
#include <vector>

#include "store/message_store.hpp"
#include "store/pg_conn.hpp"

namespace chat::store::pg {

// ---- writes ----
boost::system::error_code accept(Connection& c, const NewUserMessage& m, unsigned turns,
                                 std::vector<protocol::HistoryEntry>& out);
boost::system::error_code save_assistant(Connection& c, const AssistantMessage& m);
boost::system::error_code discard(Connection& c, const std::string& message_id);
boost::system::error_code reserve(Connection& c, const std::string& session_id, const std::string& user_id,
                                  SystemTime at);
boost::system::error_code remove_session(Connection& c, const std::string& session_id, const std::string& user_id);

// ---- reads ----
boost::system::error_code sessions_of(Connection& c, const std::string& user_id, std::size_t limit,
                                      const std::optional<SessionCursor>& before, SessionPage& page);
boost::system::error_code page_of(Connection& c, const std::string& session_id, const std::string& user_id,
                                  std::size_t limit, const std::string& before, MessagePage& page);

// ---- the session's owner, read with the row lock a caller needs ----
constexpr const char* kOwner = "SELECT user_id FROM chat_sessions WHERE session_id = $1";
constexpr const char* kOwnerAndTitle = "SELECT user_id, title FROM chat_sessions WHERE session_id = $1";
// Row locks that serialize writers of one session: messages may be added (NO KEY
// UPDATE) while nobody deletes the session (UPDATE).
constexpr const char* kOwnerForMessage = "SELECT user_id FROM chat_sessions WHERE session_id = $1 FOR NO KEY UPDATE";
constexpr const char* kOwnerForDelete = "SELECT user_id FROM chat_sessions WHERE session_id = $1 FOR UPDATE";

// `sql` is one of the k-Owner statements; nullopt owner: no such session.
boost::system::error_code read_owner(Connection& c, const char* sql, const std::string& session_id,
                                     std::optional<std::string>& owner);
// not_found without the session, forbidden when another user owns it.
boost::system::error_code check_owner(Connection& c, const char* sql, const std::string& session_id,
                                      const std::string& user_id);

}  // namespace chat::store::pg
