// chatd: the chat backend pod. Everything is configured by environment
// variables (flags override them); see --help.

#include <iostream>

#include "chat/app.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (chat::config::wants_help(args)) {
    std::cout << chat::config::help_text(chat::config::Program::chatd);
    return 0;
  }
  try {
    auto config = chat::config::load(chat::config::Program::chatd, args, chat::config::process_environment());
    chat::log::init(config.log.level, config.log.format);
    return chat::run_pod(config);
  } catch (const chat::config::ConfigError& e) {
    std::cerr << "chatd: configuration error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "chatd: cannot start: " << e.what() << "\n";
    return 1;
  }
}
