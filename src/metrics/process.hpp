#pragma once
// The standard process_* metrics of a Prometheus client, read from /proc at
// scrape time: CPU seconds, resident and virtual memory, open file
// descriptors and their limit, start time; and the log lines the process
// dropped because its stdout did not keep up.

#include "metrics/metrics.hpp"

namespace chat::metrics {

void collect_process(Exposition& out);

}  // namespace chat::metrics
