#pragma once
// The small HTTP face of a program that has no API of its own (chat-worker,
// WORKER_HTTP_PORT): /health and /ready for probes, /metrics for Prometheus.

#include <functional>
#include <string>

#include "http/http_session.hpp"
#include "metrics/metrics.hpp"

namespace chat::runtime {

struct ProbeAnswers {
  // The /health JSON body and whether the program is healthy (else 503).
  std::function<std::pair<bool, std::string>()> health;
  // Whether the program can take work now.
  std::function<bool()> ready;
};

class ProbeApi final : public http::RequestHandler {
 public:
  ProbeApi(ProbeAnswers answers, const metrics::Registry& metrics) : answers_(std::move(answers)), metrics_(metrics) {}

  void handle(http::Request request, std::shared_ptr<http::HttpSession> session) override;
  void decorate(http::Response&) override {}

 private:
  ProbeAnswers answers_;
  const metrics::Registry& metrics_;
};

}  // namespace chat::runtime
