#include "trace/otlp_exporter.hpp"

#include <curl/curl.h>

#include <memory>
#include <mutex>

#include "log/log.hpp"

namespace chat::trace {
namespace {

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// The collector's answer is not needed (partial successes are not retried).
std::size_t discard(char*, std::size_t size, std::size_t n, void*) { return size * n; }

using CurlHandle = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using HeaderList = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

std::string without_credentials(const std::string& url) {
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), curl_url_cleanup);
  char* out = nullptr;
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return "(not a URL)";
  for (auto part : {CURLUPART_USER, CURLUPART_PASSWORD, CURLUPART_OPTIONS}) curl_url_set(u.get(), part, nullptr, 0);
  if (curl_url_get(u.get(), CURLUPART_URL, &out, 0) != CURLUE_OK) return "(not a URL)";
  std::string shown(out);
  curl_free(out);
  return shown;
}

}  // namespace

OtlpExporter::OtlpExporter(ExporterOptions options)
    : options_(std::move(options)), endpoint_(without_credentials(options_.url)) {
  init_curl_once();
  thread_ = std::thread([this] { run(); });
}

OtlpExporter::~OtlpExporter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void OtlpExporter::add(SpanData span) {
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() < options_.max_queue) {
      queue_.push_back(std::move(span));
      if (queue_.size() < options_.max_batch) return;
    } else {
      stats_.dropped_queue_full.add();
      return;
    }
  }
  wake_.notify_one();  // a whole batch is waiting
}

void OtlpExporter::run() {
  bool failing = false;  // logged once per outage, not per batch
  for (;;) {
    std::vector<SpanData> batch;
    bool last = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, options_.schedule_delay,
                     [&] { return stopping_ || queue_.size() >= options_.max_batch; });
      last = stopping_ && queue_.size() <= options_.max_batch;
      auto n = std::min(queue_.size(), options_.max_batch);
      batch.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (!batch.empty()) {
      std::string error;
      if (post(encode_export_request(options_.resource, batch), error)) {
        stats_.exported.add(batch.size());
        if (std::exchange(failing, false)) log::info("trace_export_recovered", {{"url", endpoint_}});
      } else {
        stats_.export_failures.add();
        stats_.dropped_export_failed.add(batch.size());
        if (!std::exchange(failing, true))
          log::warn("trace_export_failed", {{"url", endpoint_}, {"error", error}, {"spans_dropped", batch.size()}});
      }
    }
    if (last) return;
  }
}

bool OtlpExporter::post(const std::string& body, std::string& error) const {
  CurlHandle curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) {
    error = "curl_easy_init failed";
    return false;
  }
  HeaderList headers(curl_slist_append(nullptr, "Content-Type: application/json"), curl_slist_free_all);
  for (const auto& [k, v] : options_.headers) {
    auto line = k + ": " + v;
    if (auto* grown = curl_slist_append(headers.get(), line.c_str())) {
      headers.release();
      headers.reset(grown);
    }
  }
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, options_.url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    error = curl_easy_strerror(rc);
    return false;
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status >= 300) {
    error = "collector answered HTTP " + std::to_string(status);
    return false;
  }
  return true;
}

void OtlpExporter::collect(metrics::Exposition& out) const {
  out.counter("chat_trace_spans_exported_total", "Spans the OTLP collector accepted.",
              static_cast<double>(stats_.exported.value()));
  out.counter("chat_trace_spans_dropped_total", "Spans not exported: the queue was full, or the export failed.",
              static_cast<double>(stats_.dropped_queue_full.value()), {{"reason", "queue_full"}});
  out.counter("chat_trace_spans_dropped_total", "Spans not exported: the queue was full, or the export failed.",
              static_cast<double>(stats_.dropped_export_failed.value()), {{"reason", "export_failed"}});
  out.counter("chat_trace_export_failures_total", "OTLP export calls that failed (collector down or refusing).",
              static_cast<double>(stats_.export_failures.value()));
}

}  // namespace chat::trace
