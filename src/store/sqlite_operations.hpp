#pragma once
// SqliteStore's statements, one function per store operation, each run as one
// job on the store thread. Writes are in sqlite_writes.cpp, reads (and the owner
// checks the writes share) in sqlite_reads.cpp.

#include <boost/system/error_code.hpp>

#include <optional>
#include <string>
#include <vector>

#include "store/message_store.hpp"
#include "store/sqlite_db.hpp"

namespace chat::store::sqlite {

// ---- writes ----
boost::system::error_code accept(Connection& db, const NewUserMessage& m, unsigned turns,
                                 std::vector<protocol::HistoryEntry>& out);
boost::system::error_code save_assistant(Connection& db, const AssistantMessage& m);
boost::system::error_code discard(Connection& db, const std::string& message_id);
boost::system::error_code reserve(Connection& db, const std::string& session_id, const std::string& user_id,
                                  std::int64_t at);
boost::system::error_code remove_session(Connection& db, const std::string& session_id, const std::string& user_id);

// ---- reads ----
// A session's owner; nullopt when there is no such session.
boost::system::error_code read_owner(Connection& db, const std::string& session_id, std::optional<std::string>& owner);
// not_found without the session, forbidden when another user owns it.
boost::system::error_code check_owner(Connection& db, const std::string& session_id, const std::string& user_id);
boost::system::error_code sessions_of(Connection& db, const std::string& user_id, std::size_t limit,
                                      const std::optional<SessionCursor>& before, SessionPage& page);
boost::system::error_code page_of(Connection& db, const std::string& session_id, const std::string& user_id,
                                  std::size_t limit, const std::string& before, MessagePage& page);

}  // namespace chat::store::sqlite
