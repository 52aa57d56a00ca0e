#pragma once
// A span being timed (Span) and a finished one on its way out (SpanData).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "trace/span_context.hpp"

namespace chat::trace {

// OTLP's SpanKind numbers.
enum class SpanKind : int { internal = 1, server = 2, client = 3, producer = 4, consumer = 5 };

using AttributeValue = std::variant<std::string, std::int64_t, bool>;
struct Attribute {
  std::string key;
  AttributeValue value;
};

struct SpanData {
  SpanContext context;
  SpanId parent{};  // all zero: a root span
  std::string name;
  SpanKind kind = SpanKind::internal;
  std::uint64_t start_unix_nanos = 0;
  std::uint64_t end_unix_nanos = 0;
  std::vector<Attribute> attributes;
  bool failed = false;
  std::string status_message;
};

// Takes finished spans; never blocks (implemented by the exporter's queue).
class SpanSink {
 public:
  virtual ~SpanSink() = default;
  virtual void add(SpanData span) = 0;
};

std::uint64_t unix_nanos(std::chrono::system_clock::time_point t);

// One operation being timed. Owned by one thread at a time (moved between
// them with the work it times). A span that is not recording (tracing off,
// or not sampled) costs nothing but its context, which still propagates the
// sampling decision.
class Span {
 public:
  Span() = default;
  Span(SpanContext context, std::unique_ptr<SpanData> data, SpanSink* sink)
      : context_(std::move(context)), data_(std::move(data)), sink_(sink) {}
  Span(Span&&) noexcept = default;
  Span& operator=(Span&&) noexcept = default;
  // A span never ended is dropped, not exported: a callback destroyed
  // unrun at shutdown (its exporter may be gone) sends nothing.
  ~Span() = default;

  bool recording() const { return data_ != nullptr; }
  // Invalid when tracing is off.
  const SpanContext& context() const { return context_; }

  void set(std::string key, AttributeValue value);
  void rename(std::string name);
  // The span's status becomes ERROR with this description.
  void fail(std::string message);
  // Hands the span to the exporter; idempotent.
  void end(std::chrono::system_clock::time_point at = std::chrono::system_clock::now());

 private:
  SpanContext context_;
  std::unique_ptr<SpanData> data_;
  SpanSink* sink_ = nullptr;
};

// A span that a callback kept in a std::function (which must be copyable)
// carries to the end of the operation; allocates only while recording.
class SharedSpan {
 public:
  SharedSpan() = default;
  explicit SharedSpan(Span span) {
    if (span.recording()) span_ = std::make_shared<Span>(std::move(span));
  }
  void set(std::string key, AttributeValue value) const {
    if (span_) span_->set(std::move(key), std::move(value));
  }
  // Ends the span; with a non-empty `error`, as failed.
  void end(std::string error = {}) const {
    if (!span_) return;
    if (!error.empty()) span_->fail(std::move(error));
    span_->end();
  }

 private:
  std::shared_ptr<Span> span_;
};

}  // namespace chat::trace
