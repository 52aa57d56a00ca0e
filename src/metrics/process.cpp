#include "metrics/process.hpp"

#include "log/log.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace chat::metrics {
namespace {

// Fields of /proc/self/stat after the command name (which may hold spaces).
std::vector<std::string> stat_fields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  std::istringstream rest(close == std::string::npos ? std::string() : line.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

double boot_time() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double t = 0;
      in >> t;
      return t;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

}  // namespace

void collect_process(Exposition& out) {
  auto f = stat_fields();
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // After the name: state(0) ... utime(11) stime(12) ... starttime(19) vsize(20) rss(21).
  if (f.size() > 21) {
    out.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                (std::stod(f[11]) + std::stod(f[12])) / ticks);
    out.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
              boot_time() + std::stod(f[19]) / ticks);
    out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", std::stod(f[20]));
    out.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", std::stod(f[21]) * page);
  }
  std::error_code ec;
  std::size_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec))
    ++fds;
  out.gauge("process_open_fds", "Number of open file descriptors.", static_cast<double>(fds));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0)
    out.gauge("process_max_fds", "Maximum number of open file descriptors.", static_cast<double>(limit.rlim_cur));
  out.counter("chat_log_lines_dropped_total", "Log lines dropped because stdout did not keep up.",
              static_cast<double>(log::lines_dropped()));
}

}  // namespace chat::metrics
