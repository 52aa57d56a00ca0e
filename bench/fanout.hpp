#pragma once
// `loadgen fanout`: the same chunk stream fed to chatd through NATS or to nginx+nchan through
// HTTP publish, received on one SSE stream per session (bench/fanout.cpp, bench/compare.sh).

namespace lg {

// Runs the mode with loadgen's argv (argv[1] is "fanout"); prints one JSON line.
int fanout_main(int argc, char** argv);

}  // namespace lg
