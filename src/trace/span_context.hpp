#pragma once
// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent`
// and `tracestate` headers a request arrives with, and what this program sends
// on: in NATS message headers to the worker, in the provider's HTTP request.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace chat::trace {

using TraceId = std::array<std::uint8_t, 16>;
using SpanId = std::array<std::uint8_t, 8>;

struct SpanContext {
  TraceId trace_id{};
  SpanId span_id{};
  bool sampled = false;
  std::string tracestate;  // passed on unchanged; empty when absent or malformed

  // All-zero ids are invalid (W3C): such a context is "no trace".
  bool valid() const;
  // "00-{trace}-{span}-{flags}"; empty when !valid().
  std::string traceparent() const;
  // The headers that carry this context to the next hop; none when !valid().
  std::vector<std::pair<std::string, std::string>> headers() const;
};

// nullopt for anything the W3C rules reject (the caller then starts a new
// trace). A malformed or oversized `tracestate` is dropped, not the parent.
std::optional<SpanContext> parse_traceparent(std::string_view traceparent, std::string_view tracestate = {});

std::string to_hex(const std::uint8_t* bytes, std::size_t n);
template <std::size_t N>
std::string to_hex(const std::array<std::uint8_t, N>& id) {
  return to_hex(id.data(), N);
}

// Random, never all zero.
TraceId new_trace_id();
SpanId new_span_id();

}  // namespace chat::trace
