#pragma once
// The embedded store (no DB_HOST): one SQLite file at DB_PATH.
//
// Threading: one store thread owns the connection and runs the queued jobs in
// order, so calls complete in the order they were made and every callback runs on
// that thread. The queue holds at most StoreConfig::queue_limit jobs; a call that
// finds it full completes at once, on the caller's thread, with Errc::overloaded,
// except save_assistant_message, whose reply goes to the spill journal (default
// "<DB_PATH>.spill") and completes at once with success. Between two jobs the
// thread writes one spilled reply, so the journal drains while the queue is busy;
// a spilled reply that finds the file locked or full waits there (100 ms backoff
// doubling to 2 s) instead of being dropped.
//
// Errors: Errc codes as in message_store.hpp; a value the schema rejects (unknown
// status, metadata that is not JSON) is errc::invalid_argument; a file that
// cannot be written (disk full, locked by another process beyond the busy
// timeout) is Errc::unavailable. SQLite is a local file, so there is no outage to
// wait out and no retry queue: such a failure of a queued call is reported to the
// caller.
//
// Several processes may open the same file (WAL, busy timeout, writers take the
// lock up front), so two pods on one host, or two test stores, are safe.

#include <memory>

#include "config/config.hpp"
#include "store/message_store.hpp"

namespace chat::store {

class SqliteStore final : public MessageStore {
 public:
  // Creates DB_PATH's directory and the file if needed, applies pending
  // migrations and adopts the spill journal an earlier store left (written from
  // the store thread, oldest first). Throws std::runtime_error when the file
  // cannot be opened or migrated, or the spill directory cannot be created
  // (start-up fails loudly).
  explicit SqliteStore(const config::StoreConfig& cfg);
  // Runs every job already queued (their callbacks included), then stops the
  // thread; spilled replies not yet written stay in the journal for the next store.
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  void accept_user_message(NewUserMessage m, unsigned history_turns, HistoryCallback done) override;
  void discard_message(std::string message_id, DoneCallback done) override;
  void save_assistant_message(AssistantMessage m, DoneCallback done) override;
  void claim_session(std::string session_id, std::string user_id, DoneCallback done) override;
  void session_owner(std::string session_id, OwnerCallback done) override;
  void list_sessions(std::string user_id, std::size_t limit, std::optional<SessionCursor> before,
                     SessionsCallback done) override;
  void list_messages(std::string session_id, std::string user_id, std::size_t limit, std::string before,
                     PageCallback done) override;
  void delete_session(std::string session_id, std::string user_id, DoneCallback done) override;
  void flush(DoneCallback done) override;
  ComponentStatus status() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chat::store
