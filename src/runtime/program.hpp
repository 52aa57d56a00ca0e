#pragma once
// What chatd's and chat-worker's main() share: --help, the configuration from
// the environment and flags, logging, and the exit codes of a failed start
// (2: bad configuration, 1: could not start).

#include <functional>
#include <string_view>

#include "config/config.hpp"

namespace chat::runtime {

int program_main(config::Program program, std::string_view name, int argc, char** argv,
                 const std::function<int(const config::Config&)>& run);

}  // namespace chat::runtime
