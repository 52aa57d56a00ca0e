#include "harness/server_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace chat::test {
namespace {

constexpr std::chrono::seconds kStartLimit{15};
constexpr std::chrono::seconds kStopLimit{5};

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("test server: " + what); }

std::string find_binary(const char* name, const char* override_variable) {
  if (const char* path = std::getenv(override_variable); path != nullptr && *path != '\0') {
    if (::access(path, X_OK) != 0) fail(std::string(override_variable) + "=" + path + " is not an executable");
    return path;
  }
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::stringstream in(path);
    for (std::string dir; std::getline(in, dir, ':');)
      if (!dir.empty()) dirs.push_back(dir);
  }
  for (const char* dir : {"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"}) dirs.emplace_back(dir);
  for (const auto& dir : dirs) {
    auto candidate = std::filesystem::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  fail(std::string(name) + " not found on PATH or in /usr/sbin (set " + override_variable + ")");
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

bool accepts_connections(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  auto addr = loopback(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::filesystem::path make_scratch_dir(const char* tag) {
  auto pattern = (std::filesystem::temp_directory_path() / (std::string("chat-") + tag + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp");
  return pattern;
}

// The low end of the kernel's ephemeral range (where bind(0) and outgoing connections get ports).
int ephemeral_low() {
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  return range >> low && low > 10001 ? low : 32768;
}

bool can_bind(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  auto addr = loopback(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

// Below the ephemeral range: a port bind(0) hands out is also the kind a client's outgoing
// connection gets, and one could take it between this check and the server's bind.
std::uint16_t free_port() {
  thread_local std::mt19937 pick{std::random_device{}()};
  std::uniform_int_distribution<int> in_range(10000, ephemeral_low() - 1);
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto port = static_cast<std::uint16_t>(in_range(pick));
    if (can_bind(port)) return port;
  }
  fail("no free port below the ephemeral range");
}

ServerProcess::ServerProcess(Kind kind, std::uint16_t port, std::vector<std::string> extra)
    : kind_(kind), port_(port), extra_(std::move(extra)) {
  binary_ = kind == Kind::nats ? find_binary("nats-server", "CHAT_NATS_SERVER")
                               : find_binary("redis-server", "CHAT_REDIS_SERVER");
  dir_ = make_scratch_dir(kind == Kind::nats ? "nats" : "redis");
  // A picked port may go to another test's server between the check and our
  // bind: ours then exits at start, and another port is tried.
  const bool picked = port_ == 0;
  for (int attempt = 1;; ++attempt) {
    if (picked) port_ = free_port();
    try {
      start();
      return;
    } catch (const std::runtime_error&) {
      if (!picked || running() || attempt == 5) throw;
    }
  }
}

ServerProcess::~ServerProcess() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::vector<std::string> ServerProcess::arguments() const {
  auto port = std::to_string(port_);
  std::vector<std::string> args;
  if (kind_ == Kind::nats)
    args = {binary_, "-a", "127.0.0.1", "-p", port, "-js", "-sd", (dir_ / "jetstream").string()};
  else
    args = {binary_, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir_.string()};
  args.insert(args.end(), extra_.begin(), extra_.end());
  return args;
}

std::string ServerProcess::nats_url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

void ServerProcess::start() {
  if (running()) return;
  auto args = arguments();
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto log_path = (dir_ / "server.log").string();
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    // Child of a multi-threaded parent: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  wait_until_accepting(kStartLimit);
}

void ServerProcess::wait_until_accepting(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!accepts_connections(port_)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      fail(binary_ + " exited at start on port " + std::to_string(port_) + ":\n" + log_tail());
    }
    if (std::chrono::steady_clock::now() > deadline)
      fail(binary_ + " did not accept connections on port " + std::to_string(port_) + ":\n" + log_tail());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void ServerProcess::stop() {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  ::kill(pid_, SIGCONT);  // a paused server would never get to it
  wait_for_exit(kStopLimit);
}

void ServerProcess::kill() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  wait_for_exit(kStopLimit);
}

void ServerProcess::pause() {
  if (running()) ::kill(pid_, SIGSTOP);
}

void ServerProcess::resume() {
  if (running()) ::kill(pid_, SIGCONT);
}

void ServerProcess::wait_for_exit(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (::waitpid(pid_, nullptr, WNOHANG) != pid_) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
}

void ServerProcess::restart() {
  stop();
  start();
}

std::string ServerProcess::log_tail() const {
  std::ifstream in(dir_ / "server.log");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  constexpr std::size_t kTail = 2000;
  return text.size() > kTail ? text.substr(text.size() - kTail) : text;
}

}  // namespace chat::test
