// chat-worker: takes workflow requests from NATS, streams AI replies back to
// the pods of each session. Configured by environment variables; see --help.

#include <iostream>

#include "worker/worker_app.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (chat::config::wants_help(args)) {
    std::cout << chat::config::help_text(chat::config::Program::worker);
    return 0;
  }
  try {
    auto config = chat::config::load(chat::config::Program::worker, args, chat::config::process_environment());
    chat::log::init(config.log.level, config.log.format);
    return chat::worker::run_worker(config);
  } catch (const chat::config::ConfigError& e) {
    std::cerr << "chat-worker: configuration error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "chat-worker: cannot start: " << e.what() << "\n";
    return 1;
  }
}
