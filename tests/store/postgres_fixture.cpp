#include "store/postgres_fixture.hpp"

#include "harness/server_process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace chat::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

fs::path binary(const char* name) {
  const char* env = std::getenv("CHAT_PG_BIN");
  fs::path path = fs::path(env != nullptr && *env != '\0' ? env : "/usr/lib/postgresql/15/bin") / name;
  if (!fs::exists(path))
    throw std::runtime_error("PostgreSQL binary not found: " + path.string() +
                             " (install postgresql-15 or set CHAT_PG_BIN)");
  return path;
}

// PostgreSQL refuses to run as root; as root we switch to the `postgres` account.
struct Account {
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

Account server_account() {
  if (geteuid() != 0) return {};
  const passwd* pw = getpwnam("postgres");
  if (pw == nullptr) throw std::runtime_error("running as root, but there is no 'postgres' user to run PostgreSQL as");
  return {true, pw->pw_uid, pw->pw_gid};
}

fs::path make_temp_dir() {
  std::string path = (fs::temp_directory_path() / "chat-pg-XXXXXX").string();
  if (::mkdtemp(path.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + path);
  return path;
}

// Runs in the forked child of a multi-threaded process: async-signal-safe calls only.
[[noreturn]] void exec_child(char* const* argv, const Account& as, const char* cwd, const char* log,
                             bool die_with_parent, pid_t parent) {
  int out = ::open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  int in = ::open("/dev/null", O_RDONLY);
  if (out < 0 || in < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) ::_exit(126);
  if (as.switch_user && (::setgroups(0, nullptr) != 0 || ::setgid(as.gid) != 0 || ::setuid(as.uid) != 0)) ::_exit(126);
  // After setuid: a change of credentials clears the parent-death signal.
  if (die_with_parent && (::prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || ::getppid() != parent)) ::_exit(126);
  if (::chdir(cwd) != 0) ::_exit(126);
  ::execv(argv[0], argv);
  ::_exit(127);
}

pid_t spawn(const std::vector<std::string>& args, const Account& as, const fs::path& cwd, const fs::path& log,
            bool die_with_parent) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::string cwd_text = cwd.string();
  std::string log_text = log.string();
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) exec_child(argv.data(), as, cwd_text.c_str(), log_text.c_str(), die_with_parent, parent);
  return pid;
}

// The exit code, or -1 when the process is still running after `limit`.
int wait_exit(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return 255;
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(20ms);
  }
}

int run(const std::vector<std::string>& args, const Account& as, const fs::path& cwd, const fs::path& log) {
  pid_t pid = spawn(args, as, cwd, log, false);
  int code = wait_exit(pid, 120s);
  if (code == -1) {
    ::kill(pid, SIGKILL);
    wait_exit(pid, 5s);
  }
  return code;
}

std::string tail_of(const fs::path& file, std::size_t bytes) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return {};
  std::stringstream all;
  all << in.rdbuf();
  std::string text = all.str();
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

struct FinishConn {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct ClearResult {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};

}  // namespace

PostgresServer::PostgresServer() : dir_(make_temp_dir()) {
  try {
    auto as = server_account();
    if (as.switch_user && ::chown(dir_.c_str(), as.uid, as.gid) != 0)
      throw std::runtime_error("cannot hand " + dir_.string() + " to the postgres user");
    init_cluster();
    // Another process may take the port between free_port() and the bind: try again.
    for (int attempt = 0;; ++attempt) {
      port_ = free_port();
      try {
        start();
        return;
      } catch (const std::exception&) {
        if (attempt == 2) throw;
      }
    }
  } catch (...) {
    if (running()) stop();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
    throw;
  }
}

PostgresServer::~PostgresServer() {
  if (running()) {
    resume();
    ::kill(pid_, SIGQUIT);  // immediate shutdown: the data is thrown away anyway
    if (wait_exit(pid_, 10s) == -1) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_, 5s);
    }
  }
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

PostgresServer& PostgresServer::shared() {
  static std::once_flag once;
  static std::unique_ptr<PostgresServer> server;
  static std::string error;
  std::call_once(once, [] {
    try {
      server = std::make_unique<PostgresServer>();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  if (!server) throw std::runtime_error("the PostgreSQL test server could not start: " + error);
  return *server;
}

std::string PostgresServer::password() { return "pa ss'w\"o=rd\\;@x"; }

void PostgresServer::init_cluster() {
  auto as = server_account();
  auto pwfile = dir_ / "pwfile";
  {
    std::ofstream out(pwfile);
    out << password() << '\n';
  }
  if (as.switch_user && ::chown(pwfile.c_str(), as.uid, as.gid) != 0) throw std::runtime_error("cannot chown pwfile");
  // scram-sha-256 for every connection: the store must really send the password.
  int code = run({binary("initdb").string(), "-D", (dir_ / "data").string(), "-U", user(), "--auth=scram-sha-256",
                  "--pwfile=" + pwfile.string(), "--no-locale", "-E", "UTF8", "--no-sync", "--no-instructions"},
                 as, dir_, dir_ / "initdb.log");
  if (code != 0)
    throw std::runtime_error("initdb failed (exit " + std::to_string(code) + "):\n" +
                             tail_of(dir_ / "initdb.log", 4000));
}

void PostgresServer::launch() {
  // Durability settings off: a test database is thrown away, and fsyncs dominate its run time.
  pid_ = spawn({binary("postgres").string(), "-D", (dir_ / "data").string(), "-p", std::to_string(port_), "-k",
                dir_.string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=300"},
               server_account(), dir_, dir_ / "server.log", true);
}

void PostgresServer::wait_until_ready() {
  auto deadline = std::chrono::steady_clock::now() + 60s;
  auto isready = binary("pg_isready").string();
  while (std::chrono::steady_clock::now() < deadline) {
    if (int code = wait_exit(pid_, 0ms); code != -1) {
      pid_ = -1;
      throw std::runtime_error("postgres exited at start (exit " + std::to_string(code) + "):\n" + log_tail());
    }
    if (run({isready, "-q", "-h", host(), "-p", std::to_string(port_), "-t", "1"}, Account{}, dir_,
            dir_ / "isready.log") == 0)
      return;
    std::this_thread::sleep_for(100ms);
  }
  throw std::runtime_error("postgres did not become ready within 60 s:\n" + log_tail());
}

void PostgresServer::start() {
  if (running()) return;
  launch();
  wait_until_ready();
}

void PostgresServer::stop() {
  if (!running()) return;
  resume();  // a paused server would never get to its shutdown
  ::kill(pid_, SIGINT);  // fast shutdown: disconnects clients, checkpoints, exits
  if (wait_exit(pid_, 30s) == -1) {
    ::kill(pid_, SIGKILL);
    wait_exit(pid_, 5s);
  }
  pid_ = -1;
}

namespace {

// The server's backends and helpers: the postmaster's children.
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> children;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    char state = 0;
    pid_t ppid = 0;
    if (rest >> state >> ppid && ppid == parent) children.push_back(std::stoi(entry.path().filename().string()));
  }
  return children;
}

}  // namespace

void PostgresServer::pause() {
  if (!running()) return;
  ::kill(pid_, SIGSTOP);  // first, so it starts no new backend meanwhile
  for (pid_t child : children_of(pid_)) ::kill(child, SIGSTOP);
}

void PostgresServer::resume() {
  if (!running()) return;
  for (pid_t child : children_of(pid_)) ::kill(child, SIGCONT);
  ::kill(pid_, SIGCONT);
}

std::string PostgresServer::create_database() {
  std::string name = "chat_test_" + std::to_string(::getpid()) + "_" + std::to_string(++databases_);
  query("postgres", "CREATE DATABASE " + name);
  return name;
}

config::StoreConfig PostgresServer::store_config(const std::string& database) const {
  config::StoreConfig cfg;
  cfg.host = host();
  cfg.port = port_;
  cfg.user = user();
  cfg.password = password();
  cfg.name = database;
  cfg.sslmode = "disable";
  cfg.pool_size = 2;  // several stores share one server in a test; keep connections few
  return cfg;
}

std::string PostgresServer::query(const std::string& database, const std::string& sql) const {
  std::string port = std::to_string(port_);
  std::string pass = password();
  std::string h = host();
  std::string u = user();
  const char* keys[] = {"host", "port", "user", "password", "dbname", "connect_timeout", nullptr};
  const char* values[] = {h.c_str(), port.c_str(), u.c_str(), pass.c_str(), database.c_str(), "10", nullptr};
  std::unique_ptr<PGconn, FinishConn> conn(PQconnectdbParams(keys, values, 0));
  if (PQstatus(conn.get()) != CONNECTION_OK)
    throw std::runtime_error(std::string("test connection failed: ") + PQerrorMessage(conn.get()));
  std::unique_ptr<PGresult, ClearResult> result(PQexec(conn.get(), sql.c_str()));
  auto status = PQresultStatus(result.get());
  if (status == PGRES_COMMAND_OK) return {};
  if (status != PGRES_TUPLES_OK) throw std::runtime_error(sql + ": " + PQresultErrorMessage(result.get()));
  return PQntuples(result.get()) > 0 ? PQgetvalue(result.get(), 0, 0) : "";
}

std::string PostgresServer::log_tail() const { return tail_of(dir_ / "server.log", 4000); }

}  // namespace chat::test
