#pragma once
// chatd as a whole: builds each component from the configuration (embedded or
// distributed, chosen per backend), serves until SIGTERM/SIGINT, then drains.

#include "config/config.hpp"

namespace chat {

// Runs the pod; returns the process exit code. Start-up failures throw.
int run_pod(const config::Config& config);

}  // namespace chat
