#pragma once
// chat-worker as a whole: the workflow worker on NATS with the Redis registry,
// until SIGTERM, then it finishes running generations and leaves.

#include "config/config.hpp"

namespace chat::worker {

// Returns the exit code. Start-up failures throw.
int run_worker(const config::Config& config);

}  // namespace chat::worker
