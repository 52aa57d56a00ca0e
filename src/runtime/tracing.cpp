#include "runtime/tracing.hpp"

#include "log/log.hpp"

namespace chat::runtime {

Tracing make_tracing(const config::TraceConfig& c, const std::string& program, const std::string& instance) {
  Tracing t;
  if (c.url.empty()) return t;
  trace::ExporterOptions o;
  o.url = c.url;
  o.headers = c.headers;
  o.resource.attributes = {{"service.name", c.service_name.empty() ? program : c.service_name},
                           {"service.instance.id", instance}};
  for (const auto& kv : c.resource_attributes)
    if (kv.first != "service.name" && kv.first != "service.instance.id") o.resource.attributes.push_back(kv);
  o.max_queue = c.max_queue;
  o.max_batch = c.max_batch;
  o.schedule_delay = c.schedule_delay;
  o.timeout = c.timeout;
  t.exporter = std::make_unique<trace::OtlpExporter>(std::move(o));
  // The configuration checked the name.
  auto sampler = trace::parse_sampler(c.sampler).value_or(trace::Sampler::parent_based_always_on);
  t.tracer = trace::Tracer(*t.exporter, sampler, c.sampler_ratio);
  log::info("tracing_on", {{"url", t.exporter->endpoint()}, {"sampler", c.sampler}, {"ratio", c.sampler_ratio}});
  return t;
}

}  // namespace chat::runtime
