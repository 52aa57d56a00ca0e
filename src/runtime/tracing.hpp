#pragma once
// The program's tracer and its OTLP exporter from the OTEL_* settings; both
// off (a default Tracer, no exporter) when no endpoint is set.

#include <memory>
#include <string>

#include "config/config.hpp"
#include "trace/otlp_exporter.hpp"
#include "trace/tracer.hpp"

namespace chat::runtime {

struct Tracing {
  std::unique_ptr<trace::OtlpExporter> exporter;  // null: tracing off
  trace::Tracer tracer;
  void collect(metrics::Exposition& out) const {
    if (exporter) exporter->collect(out);
  }
};

// `program` is the default service.name; `instance` becomes service.instance.id.
Tracing make_tracing(const config::TraceConfig& c, const std::string& program, const std::string& instance);

}  // namespace chat::runtime
