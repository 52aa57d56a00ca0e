#include "limits/limiter.hpp"

namespace chat::limits {

std::string_view limit_name(Limit limit) {
  switch (limit) {
    case Limit::chat: return "chat";
    case Limit::ip: return "ip";
    case Limit::running_replies: return "running_replies";
    case Limit::streams: return "streams";
    case Limit::connections: return "connections";
  }
  return "unknown";
}

void LimitMetrics::collect(metrics::Exposition& out) const {
  for (std::size_t i = 0; i < kLimitCount; ++i)
    out.counter("chat_rate_limited_total", "Requests and connections refused by a limit (429), by limit.",
                static_cast<double>(refused[i].value()), {{"limit", std::string(limit_name(static_cast<Limit>(i)))}});
  out.counter("chat_rate_limit_undecided_total",
              "Requests let through because the limiter could not decide (Redis unreachable).",
              static_cast<double>(undecided.value()));
}

}  // namespace chat::limits
