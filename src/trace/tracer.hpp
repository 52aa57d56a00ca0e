#pragma once
// Starts spans and decides which traces are recorded (OTEL_TRACES_SAMPLER).
// A default-constructed Tracer is off: its spans record nothing and carry no
// context, so nothing is propagated either. Safe to use from any thread.

#include <optional>
#include <string>
#include <string_view>

#include "trace/span.hpp"

namespace chat::trace {

enum class Sampler {
  always_on,
  always_off,
  trace_id_ratio,
  parent_based_always_on,  // the OpenTelemetry default
  parent_based_always_off,
  parent_based_trace_id_ratio,
};

class Tracer {
 public:
  Tracer() = default;  // off
  Tracer(SpanSink& sink, Sampler sampler, double ratio) : sink_(&sink), sampler_(sampler), ratio_(ratio) {}

  bool enabled() const { return sink_ != nullptr; }

  // A child of `parent`, or the root of a new trace when `parent` is invalid.
  Span start(std::string name, SpanKind kind, const SpanContext& parent,
             std::chrono::system_clock::time_point at = std::chrono::system_clock::now()) const;

 private:
  bool sample(const SpanContext& parent, const TraceId& trace_id) const;

  SpanSink* sink_ = nullptr;
  Sampler sampler_ = Sampler::parent_based_always_on;
  double ratio_ = 1.0;
};

// "always_on", "parentbased_traceidratio", ...; nullopt for an unknown name.
std::optional<Sampler> parse_sampler(std::string_view name);

}  // namespace chat::trace
