#pragma once
// A real PostgreSQL 15 for tests: initdb in a fresh temporary directory, the
// server started as a child process (as user `postgres` when the test runs as
// root) on a free 127.0.0.1 port with its socket in that directory, waited for
// with pg_isready, stopped and removed at the end. stop() and start() again on
// the same data directory and port simulate an outage.
//
// Nothing here skips: missing binaries or a server that does not come up throw
// std::runtime_error with the server's log, and the test fails.
//
// Binaries come from /usr/lib/postgresql/15/bin unless CHAT_PG_BIN names
// another directory. The superuser password deliberately holds spaces, quotes,
// '=' and a backslash, so every connection proves conninfo quoting is right.
//
// The server dies with the thread that started it (PR_SET_PDEATHSIG), so a
// crashed test leaves no postgres behind: start it from the test's main thread.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "config/config.hpp"

namespace chat::test {

class PostgresServer {
 public:
  PostgresServer();  // initdb + start
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // One server for every test of the process, started on first use. A failed
  // start is remembered and thrown again to each caller, so every test fails.
  static PostgresServer& shared();

  void start();  // no-op while running
  void stop();   // fast shutdown (clients are disconnected), waits for the exit
  // SIGSTOP to the server and every backend: a server that hangs (connections
  // stay open, queries never answer), as a stalled host or a partition looks.
  void pause();
  void resume();  // SIGCONT: the queries sent meanwhile are answered
  bool running() const { return pid_ > 0; }

  std::string host() const { return "127.0.0.1"; }
  std::uint16_t port() const { return port_; }
  std::string user() const { return "postgres"; }
  static std::string password();

  // Creates an empty database and returns its name (unique in this server).
  std::string create_database();
  // StoreConfig for `database`, as chatd would build it from DB_* settings.
  config::StoreConfig store_config(const std::string& database) const;
  // Runs one SQL statement as the superuser; the first column of the first row,
  // "" when there is none. Throws on error. For checks the store API cannot make.
  std::string query(const std::string& database, const std::string& sql) const;

  std::string log_tail() const;

 private:
  void init_cluster();
  void launch();
  void wait_until_ready();

  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  unsigned databases_ = 0;
};

}  // namespace chat::test
