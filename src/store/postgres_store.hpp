#pragma once
// The distributed store (DB_HOST set): PostgreSQL through libpq.
//
// Threading: StoreConfig::pool_size connections, each owned by its own thread,
// take jobs from one queue of at most StoreConfig::queue_limit jobs. Calls may
// therefore complete out of order; every callback runs on a store thread. A call
// that finds the queue full completes at once, on the caller's thread, with
// Errc::overloaded, except save_assistant_message (see below). flush() completes
// after every job queued before it and after the retry queue and the spill
// journal have drained.
//
// Connections: settings go to libpq as keyword/value pairs (DB_SSLMODE included),
// so no character in a password can change them, and the password is never
// logged. A connection found dead is reopened and its job retried once; while
// the server stays down, reconnects back off (100 ms doubling to 2 s) and jobs
// fail at once with Errc::unavailable instead of queueing up behind it.
// connected() is false while no pool connection works; idle connections check
// the server every second so it turns false without waiting for traffic.
//
// Outage, overload and assistant replies: save_assistant_message never loses the
// reply. One that fails with Errc::unavailable moves to a retry queue in memory
// (at most queue_limit replies); one that finds the pool's queue or the retry
// queue full is appended to the spill journal (default
// "<temp dir>/chatd-spill-<host>-<port>-<name>"). The CALLBACK COMPLETES WITH
// SUCCESS as soon as the reply is queued or spilled: the caller has nothing better
// to do than wait, and the write is idempotent on message_id. A dedicated thread
// and connection write the retry queue, then the journal, in order, with backoff
// while the server is down. Replies still in memory when the store is destroyed
// with the server down join the journal; the next store on the same database (a
// restarted pod) writes it at start-up. Only a reply the journal cannot take
// either is lost, logged as store_spill_failed.
//
// Other errors as in message_store.hpp, plus errc::invalid_argument for values
// the schema rejects (unknown status, metadata that is not JSON, NUL bytes).

#include <memory>

#include "config/config.hpp"
#include "store/message_store.hpp"

namespace chat::store {

class PostgresStore final : public MessageStore {
 public:
  // Connects, applies pending migrations (under an advisory lock, so pods that
  // start together take turns), opens the pool and starts writing the spill
  // journal an earlier store left. Throws std::runtime_error when the server
  // cannot be reached, a migration fails or the spill directory cannot be created
  // (start-up fails loudly).
  explicit PostgresStore(const config::StoreConfig& cfg);
  // Copies every reply not yet written (queued, being written, waiting to be
  // retried) to the spill journal first, so that a process killed while this
  // waits on a hung server loses none; then runs the jobs already queued, gives
  // the retry queue a last try (what still cannot be written joins the
  // journal), and stops.
  ~PostgresStore() override;
  PostgresStore(const PostgresStore&) = delete;
  PostgresStore& operator=(const PostgresStore&) = delete;

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
