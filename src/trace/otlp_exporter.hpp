#pragma once
// Sends finished spans to an OpenTelemetry collector: OTLP over HTTP with
// JSON bodies, in batches, from a thread of its own (the BatchSpanProcessor of
// the OpenTelemetry SDKs, OTEL_BSP_*). add() never blocks and never waits for
// the collector: past the queue's limit, and when an export fails, spans are
// dropped and counted, so a tracing outage never slows a chat.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "metrics/metrics.hpp"
#include "trace/otlp_json.hpp"
#include "trace/span.hpp"

namespace chat::trace {

struct ExporterOptions {
  std::string url;  // the traces endpoint, e.g. http://collector:4318/v1/traces
  std::vector<std::pair<std::string, std::string>> headers;  // OTEL_EXPORTER_OTLP_HEADERS
  Resource resource;
  std::size_t max_queue = 2048;
  std::size_t max_batch = 512;
  std::chrono::milliseconds schedule_delay{5'000};
  std::chrono::milliseconds timeout{10'000};  // one export's HTTP call
};

struct ExporterStats {
  metrics::Counter exported;
  metrics::Counter dropped_queue_full;
  metrics::Counter dropped_export_failed;
  metrics::Counter export_failures;  // failed HTTP calls
};

class OtlpExporter final : public SpanSink {
 public:
  explicit OtlpExporter(ExporterOptions options);
  // Sends what is queued (each call bounded by the timeout), then stops.
  ~OtlpExporter() override;

  void add(SpanData span) override;
  void collect(metrics::Exposition& out) const;
  const ExporterStats& stats() const { return stats_; }
  // The endpoint as logs show it: without credentials (https://user:token@…).
  const std::string& endpoint() const { return endpoint_; }

 private:
  void run();
  bool post(const std::string& body, std::string& error) const;

  ExporterOptions options_;
  std::string endpoint_;
  ExporterStats stats_;
  // Guards queue_ and stopping_; held only to move spans in or out.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<SpanData> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace chat::trace
