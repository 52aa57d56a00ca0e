#include "trace/otlp_json.hpp"

#include <boost/json.hpp>

namespace json = boost::json;

namespace chat::trace {
namespace {

json::object value_of(const AttributeValue& v) {
  if (auto* s = std::get_if<std::string>(&v)) return {{"stringValue", *s}};
  if (auto* i = std::get_if<std::int64_t>(&v)) return {{"intValue", std::to_string(*i)}};
  return {{"boolValue", std::get<bool>(v)}};
}

json::object span_json(const SpanData& s) {
  json::array attributes;
  for (const auto& a : s.attributes) attributes.push_back(json::object{{"key", a.key}, {"value", value_of(a.value)}});
  json::object o{{"traceId", to_hex(s.context.trace_id)},
                 {"spanId", to_hex(s.context.span_id)},
                 {"name", s.name},
                 {"kind", static_cast<int>(s.kind)},
                 {"startTimeUnixNano", std::to_string(s.start_unix_nanos)},
                 {"endTimeUnixNano", std::to_string(s.end_unix_nanos)},
                 {"attributes", std::move(attributes)}};
  if (s.parent != SpanId{}) o["parentSpanId"] = to_hex(s.parent);
  if (!s.context.tracestate.empty()) o["traceState"] = s.context.tracestate;
  // STATUS_CODE_ERROR is 2; an unset status (0) means the operation did not fail.
  if (s.failed) o["status"] = json::object{{"code", 2}, {"message", s.status_message}};
  return o;
}

}  // namespace

std::string encode_export_request(const Resource& resource, const std::vector<SpanData>& spans) {
  json::array attributes;
  for (const auto& [k, v] : resource.attributes)
    attributes.push_back(json::object{{"key", k}, {"value", json::object{{"stringValue", v}}}});
  json::array encoded;
  encoded.reserve(spans.size());
  for (const auto& s : spans) encoded.push_back(span_json(s));
  json::object scope_spans{{"scope", json::object{{"name", "chat"}}}, {"spans", std::move(encoded)}};
  json::object resource_spans{{"resource", json::object{{"attributes", std::move(attributes)}}},
                              {"scopeSpans", json::array{std::move(scope_spans)}}};
  return json::serialize(json::object{{"resourceSpans", json::array{std::move(resource_spans)}}});
}

}  // namespace chat::trace
