#pragma once
// `loadgen natshop`: the NATS hop alone, publisher to nats-server to subscriber, timed the way
// `loadgen fanout` times a chunk through chatd (bench/nats_hop.cpp). The floor under chatd's
// latency through NATS on the same machine.

namespace lg {

// Runs the mode with loadgen's argv (argv[1] is "natshop"); prints one JSON line.
int nats_hop_main(int argc, char** argv);

}  // namespace lg
