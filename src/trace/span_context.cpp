#include "trace/span_context.hpp"

#include <algorithm>
#include <random>

namespace chat::trace {
namespace {

constexpr std::size_t kTraceparentSize = 55;  // 2 + 1 + 32 + 1 + 16 + 1 + 2
constexpr std::size_t kMaxTracestate = 512;   // W3C: at least 512 must be propagated; more may be cut

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // upper case is invalid in traceparent
}

bool parse_hex(std::string_view text, std::uint8_t* out, std::size_t n) {
  if (text.size() != 2 * n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return true;
}

template <std::size_t N>
bool all_zero(const std::array<std::uint8_t, N>& id) {
  return std::all_of(id.begin(), id.end(), [](std::uint8_t b) { return b == 0; });
}

// Printable ASCII without a tab or a newline, so it is safe in any header.
bool acceptable_tracestate(std::string_view s) {
  return s.size() <= kMaxTracestate &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

std::mt19937_64& generator() {
  thread_local std::mt19937_64 g{std::random_device{}()};
  return g;
}

template <std::size_t N>
std::array<std::uint8_t, N> random_id() {
  std::array<std::uint8_t, N> id{};
  do {
    for (std::size_t i = 0; i < N; i += 8) {
      auto r = generator()();
      for (std::size_t j = 0; j < 8 && i + j < N; ++j) id[i + j] = static_cast<std::uint8_t>(r >> (8 * j));
    }
  } while (all_zero(id));
  return id;
}

}  // namespace

bool SpanContext::valid() const { return !all_zero(trace_id) && !all_zero(span_id); }

std::string SpanContext::traceparent() const {
  if (!valid()) return {};
  return "00-" + to_hex(trace_id) + "-" + to_hex(span_id) + (sampled ? "-01" : "-00");
}

std::vector<std::pair<std::string, std::string>> SpanContext::headers() const {
  std::vector<std::pair<std::string, std::string>> h;
  if (!valid()) return h;
  h.emplace_back("traceparent", traceparent());
  if (!tracestate.empty()) h.emplace_back("tracestate", tracestate);
  return h;
}

std::optional<SpanContext> parse_traceparent(std::string_view tp, std::string_view tracestate) {
  // A later version may append fields after a '-'; version 00 has exactly four.
  if (tp.size() < kTraceparentSize) return std::nullopt;
  std::uint8_t version = 0, flags = 0;
  if (!parse_hex(tp.substr(0, 2), &version, 1) || version == 0xff) return std::nullopt;
  if (version == 0 && tp.size() != kTraceparentSize) return std::nullopt;
  if (tp.size() > kTraceparentSize && tp[kTraceparentSize] != '-') return std::nullopt;
  if (tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return std::nullopt;
  SpanContext c;
  if (!parse_hex(tp.substr(3, 32), c.trace_id.data(), 16) || !parse_hex(tp.substr(36, 16), c.span_id.data(), 8) ||
      !parse_hex(tp.substr(53, 2), &flags, 1) || !c.valid())
    return std::nullopt;
  c.sampled = (flags & 0x01) != 0;
  if (acceptable_tracestate(tracestate)) c.tracestate = std::string(tracestate);
  return c;
}

std::string to_hex(const std::uint8_t* bytes, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 0x0f];
  }
  return s;
}

TraceId new_trace_id() { return random_id<16>(); }
SpanId new_span_id() { return random_id<8>(); }

}  // namespace chat::trace
