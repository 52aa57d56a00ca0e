#pragma once
// Sessions and messages (docs/API.md#database). Two implementations: SqliteStore (the
// embedded default, DB_PATH) and PostgresStore (DB_HOST set). The HTTP layer and
// the session hub only see this interface.
//
// Contract, for every implementation:
// - No call blocks its caller: each is queued (bounded; a full queue completes at
//   once with Errc::overloaded, on the caller's thread before the call returns)
//   and completes through its callback, which otherwise runs on a store-owned
//   thread (post to your own executor).
// - Except that a finished reply is never refused: save_assistant_message that
//   finds the queue full appends the reply to the spill journal on disk
//   (StoreConfig::spill_dir, see spill_journal.hpp) and completes at once, on the
//   caller's thread, with success; the store writes the journal in order as soon
//   as it can, and at start-up writes what an earlier store on the same database
//   left there. Memory stays bounded. The caller pays one append to a local
//   file; only an append that fails (disk full, directory gone) completes with
//   that error (logged as store_spill_failed).
// - Values the schema rejects (unknown status, metadata that is not JSON) fail
//   with boost::system::errc::invalid_argument.
// - Schema changes are versioned migrations applied by the constructor/start,
//   safe when several processes start at once.
// - save_assistant_message is idempotent on message_id: the first write wins and
//   later writes of the same id succeed without changing it. A reply that names
//   its user (AssistantMessage::user_id) whose session is another user's is not
//   written (not_found, as for a session that is gone). Spilled replies
//   keep that rule, so a reply written twice (another pod, a journal replayed
//   after a restart) changes nothing.
// - A completed assistant message that cannot be written because the database is
//   down waits in a bounded retry queue, then in the spill journal, and is
//   written when it is back.

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/component_status.hpp"
#include "common/time.hpp"
#include "protocol/messages.hpp"

namespace chat::store {

enum class Errc {
  forbidden = 1,  // the session belongs to another user
  not_found,      // no such session (or message)
  unavailable,    // the database cannot be reached
  overloaded,     // the operation queue is full
};
const boost::system::error_category& store_category() noexcept;
inline boost::system::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), store_category()}; }

struct NewUserMessage {
  std::string session_id;
  std::string user_id;
  std::string message_id;  // the user message's own id
  std::string content;
  std::string ai_provider;
  std::string model;
  SystemTime created_at;
};

struct AssistantMessage {
  std::string message_id;
  std::string session_id;
  std::string content;
  std::int64_t token_count = 0;
  std::string status;         // complete | error | cancelled | incomplete
  std::string metadata_json;  // {"model","finish_reason","duration_ms",...}
  SystemTime created_at;
  // Whose chat it answers, when known: a reply written late (from the spill
  // journal, after an outage) to a session deleted and made again by someone
  // else meanwhile must not land there. Empty: not checked.
  std::string user_id = {};
};

struct StoredMessage {
  std::string message_id;
  std::string session_id;
  std::string role;  // user | assistant | system
  std::string content;
  std::int64_t token_count = 0;
  std::string status;
  std::string metadata_json;
  SystemTime created_at;
};

struct SessionSummary {
  std::string session_id;
  std::string user_id;
  std::string title;  // the first words of the first message
  std::string ai_provider;
  std::string model_name;
  SystemTime created_at;
  SystemTime updated_at;
  SystemTime last_message_at;
};

// Where a page of sessions ended: the next page lists the sessions after it
// (older last_message_at, then the lower session id). A position, not a row,
// so it holds when that session is deleted meanwhile.
struct SessionCursor {
  SystemTime last_message_at;
  std::string session_id;
};

struct SessionPage {
  std::vector<SessionSummary> sessions;       // newest first
  std::optional<SessionCursor> next_before;  // pass as `before` for the older page
};

struct MessagePage {
  std::string title;  // the session's (SessionSummary::title), so a page needs no list to name it
  std::vector<StoredMessage> messages;     // oldest first
  std::optional<std::string> next_before;  // pass as `before` for the older page
};

using DoneCallback = std::function<void(boost::system::error_code)>;
using HistoryCallback = std::function<void(boost::system::error_code, std::vector<protocol::HistoryEntry>)>;
using OwnerCallback = std::function<void(boost::system::error_code, std::optional<std::string> owner)>;
using SessionsCallback = std::function<void(boost::system::error_code, SessionPage)>;
using PageCallback = std::function<void(boost::system::error_code, MessagePage)>;

class MessageStore {
 public:
  virtual ~MessageStore() = default;

  // Creates the session on first use (owned by m.user_id; forbidden for another
  // user), stores the user message and returns up to `history_turns` messages
  // that came before it, oldest first.
  virtual void accept_user_message(NewUserMessage m, unsigned history_turns, HistoryCallback done) = 0;
  // Undoes accept_user_message when the request could not be handed to the bus:
  // deletes that user message, and the session too when it was its only message.
  // not_found when there is no such user message.
  virtual void discard_message(std::string message_id, DoneCallback done) = 0;
  virtual void save_assistant_message(AssistantMessage m, DoneCallback done) = 0;

  // Creates the session, empty and owned by `user_id`, unless it exists:
  // forbidden when another user owns it. A stream opened before the session's
  // first message and POST /api/sessions claim it, so nobody else can create it
  // and have their replies go to that stream. Its title comes with its first
  // message.
  virtual void claim_session(std::string session_id, std::string user_id, DoneCallback done) = 0;
  // nullopt owner: the session does not exist (yet).
  virtual void session_owner(std::string session_id, OwnerCallback done) = 0;
  // The user's `limit` (clamped to 1..1000) newest sessions after `before`
  // (none: from the newest); next_before is set when older ones exist.
  virtual void list_sessions(std::string user_id, std::size_t limit, std::optional<SessionCursor> before,
                             SessionsCallback done) = 0;
  // `before`: a message id from next_before; empty for the newest page. The page
  // holds the `limit` newest messages older than `before` (limit clamped to
  // 1..1000); next_before is set when older ones exist. not_found for an unknown
  // session or a `before` that is not a message of it, forbidden for another
  // user's session.
  virtual void list_messages(std::string session_id, std::string user_id, std::size_t limit, std::string before,
                             PageCallback done) = 0;
  virtual void delete_session(std::string session_id, std::string user_id, DoneCallback done) = 0;

  // Completes once every write queued before it, the retry queue and the spill
  // journal are done, or failed. While the database is down it waits for it to
  // return: give it your own deadline. A flush still waiting when the store is
  // destroyed completes with Errc::unavailable (the journal keeps the replies).
  virtual void flush(DoneCallback done) = 0;
  virtual ComponentStatus status() const = 0;
  bool connected() const { return status().connected; }
};

// The session title: the first words of the first message, at most ~60 characters.
std::string make_title(std::string_view first_message);

}  // namespace chat::store

template <>
struct boost::system::is_error_code_enum<chat::store::Errc> : std::true_type {};
