#include "runtime/program.hpp"

#include <csignal>
#include <iostream>

namespace chat::runtime {

int program_main(config::Program program, std::string_view name, int argc, char** argv,
                 const std::function<int(const config::Config&)>& run) {
  // A log reader that went away (a closed pipe on stdout) must cost log lines,
  // not the process: the write fails with EPIPE instead.
  std::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (config::wants_help(args)) {
    std::cout << config::help_text(program);
    return 0;
  }
  int code = 0;
  try {
    auto settings = config::load(program, args, config::process_environment());
    log::init(settings.log.level, settings.log.format);
    code = run(settings);
  } catch (const config::ConfigError& e) {
    std::cerr << name << ": configuration error: " << e.what() << "\n";
    code = 2;
  } catch (const std::exception& e) {
    std::cerr << name << ": cannot start: " << e.what() << "\n";
    code = 1;
  }
  log::flush();  // the lines still queued (a second at most: stdout may be stuck)
  return code;
}

}  // namespace chat::runtime
