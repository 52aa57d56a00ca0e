#include "trace/tracer.hpp"

#include <cmath>
#include <limits>

namespace chat::trace {
namespace {

// The OpenTelemetry TraceIdRatioBased rule: the trace id's last 8 bytes,
// read as a number, below ratio × 2^64. Every program decides alike.
bool ratio_keeps(const TraceId& id, double ratio) {
  if (ratio >= 1.0) return true;
  if (ratio <= 0.0) return false;
  std::uint64_t low = 0;
  for (std::size_t i = 8; i < 16; ++i) low = (low << 8) | id[i];
  return static_cast<double>(low) < ratio * std::pow(2.0, 64);
}

}  // namespace

bool Tracer::sample(const SpanContext& parent, const TraceId& trace_id) const {
  switch (sampler_) {
    case Sampler::always_on: return true;
    case Sampler::always_off: return false;
    case Sampler::trace_id_ratio: return ratio_keeps(trace_id, ratio_);
    case Sampler::parent_based_always_on: return parent.valid() ? parent.sampled : true;
    case Sampler::parent_based_always_off: return parent.valid() ? parent.sampled : false;
    case Sampler::parent_based_trace_id_ratio:
      return parent.valid() ? parent.sampled : ratio_keeps(trace_id, ratio_);
  }
  return false;
}

Span Tracer::start(std::string name, SpanKind kind, const SpanContext& parent,
                   std::chrono::system_clock::time_point at) const {
  if (!sink_) return {};
  SpanContext context;
  context.trace_id = parent.valid() ? parent.trace_id : new_trace_id();
  context.span_id = new_span_id();
  context.tracestate = parent.valid() ? parent.tracestate : std::string();
  context.sampled = sample(parent, context.trace_id);
  if (!context.sampled) return Span(std::move(context), nullptr, nullptr);
  auto data = std::make_unique<SpanData>();
  data->context = context;
  if (parent.valid()) data->parent = parent.span_id;
  data->name = std::move(name);
  data->kind = kind;
  data->start_unix_nanos = unix_nanos(at);
  return Span(std::move(context), std::move(data), sink_);
}

std::optional<Sampler> parse_sampler(std::string_view name) {
  if (name == "always_on") return Sampler::always_on;
  if (name == "always_off") return Sampler::always_off;
  if (name == "traceidratio") return Sampler::trace_id_ratio;
  if (name == "parentbased_always_on") return Sampler::parent_based_always_on;
  if (name == "parentbased_always_off") return Sampler::parent_based_always_off;
  if (name == "parentbased_traceidratio") return Sampler::parent_based_trace_id_ratio;
  return std::nullopt;
}

}  // namespace chat::trace
