#pragma once
// Real servers for tests: starts nats-server or redis-server as a child process
// on a free 127.0.0.1 port with its own scratch directory, waits until it
// accepts connections, can stop and restart it on the same port, and kills it
// in the destructor. A missing binary or a server that does not come up throws,
// which fails the test: these tests never skip.
//
// Binaries are looked up on PATH and in /usr/sbin, /usr/local/sbin (Debian puts
// nats-server in /usr/sbin); CHAT_NATS_SERVER / CHAT_REDIS_SERVER override.
//
// The child gets SIGKILL when the thread that started it dies (PR_SET_PDEATHSIG),
// so a crashed test leaves no server behind: start servers from the test's
// main thread.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace chat::test {

class ServerProcess {
 public:
  enum class Kind { nats, redis };

  // Picks a port (or takes `port`, 0 = pick one) and a scratch directory and
  // starts the server; `extra` is appended to its command line
  // (e.g. {"--requirepass", "secret"}).
  explicit ServerProcess(Kind kind, std::uint16_t port = 0, std::vector<std::string> extra = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  void start();    // no-op while running
  void stop();     // SIGTERM, then SIGKILL after 5 s; no-op while stopped
  void kill();     // SIGKILL at once, like a crash
  // SIGSTOP / SIGCONT: a server that hangs with its connections open (a frozen
  // process, a paused VM) and comes back.
  void pause();
  void resume();
  void restart();  // stop + start, same port and directory

  bool running() const { return pid_ > 0; }
  std::uint16_t port() const { return port_; }
  std::string host() const { return "127.0.0.1"; }
  std::string nats_url() const;  // "nats://127.0.0.1:<port>"
  const std::filesystem::path& directory() const { return dir_; }
  std::string log_tail() const;  // the server's last output, for failure messages

 private:
  std::vector<std::string> arguments() const;
  void wait_until_accepting(std::chrono::milliseconds limit);
  void wait_for_exit(std::chrono::milliseconds limit);

  Kind kind_;
  std::string binary_;
  std::uint16_t port_ = 0;
  std::vector<std::string> extra_;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

// A TCP port on 127.0.0.1 that nothing listens on right now.
std::uint16_t free_port();

// Polls `condition` every 10 ms until it holds or `limit` passes.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = std::chrono::seconds(10));

}  // namespace chat::test

#include <thread>

template <class Condition>
bool chat::test::eventually(Condition condition, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}
