#pragma once
// The OTLP/HTTP JSON body of an export (opentelemetry-proto's
// ExportTraceServiceRequest in its JSON mapping: ids in lower-case hex, times
// and 64-bit integers as decimal strings, enums as numbers).

#include <string>
#include <utility>
#include <vector>

#include "trace/span.hpp"

namespace chat::trace {

struct Resource {
  std::vector<std::pair<std::string, std::string>> attributes;  // service.name first
};

std::string encode_export_request(const Resource& resource, const std::vector<SpanData>& spans);

}  // namespace chat::trace
