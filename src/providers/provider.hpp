#pragma once
// An AI provider that streams a reply (docs/API.md#providers). Implementations: demo
// (built in) and HttpStreamingProvider (openai, anthropic).
//
// The contract every provider keeps, and the worker relies on:
// - start() returns at once and never calls the sink itself: every sink call
//   comes later, from the provider's executor. start() may be called from any
//   thread, for any number of generations at once, without a thread each.
// - A generation calls its sink one call at a time, in order: any number of
//   on_text, then exactly one on_finish or on_error, then nothing more. Text
//   already passed on stays passed on, also when the generation then fails.
// - The provider keeps the sink alive until that final call. Dropping the
//   Generation handle does not stop the generation; cancel() does.
// - Errors carry a stable code (provider_errors.hpp) and a message for people
//   that never contains a key or other secret.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/messages.hpp"

namespace chat::providers {

struct Finish {
  std::string finish_reason;  // stop | length | cancelled
  std::optional<std::int64_t> tokens_used;  // the reply's tokens (not the prompt's); absent when unknown
  std::string model;  // as the provider named it (a dated version), else the requested one
};

// Receives one generation's output (see the contract above).
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  virtual void on_text(std::string_view text) = 0;
  virtual void on_finish(const Finish& finish) = 0;
  // `code` is stable and machine-readable (provider_error, rate_limited, ...);
  // `message` is for people and never contains a secret.
  virtual void on_error(std::string_view code, std::string_view message) = 0;
};

class Generation {
 public:
  virtual ~Generation() = default;
  // Stops the generation; the sink then gets on_finish with "cancelled" (unless
  // it already finished). Safe to call more than once and from any thread.
  virtual void cancel() = 0;
};

// W3C trace context headers of the provider call (traceparent, tracestate);
// an HTTP provider sends them with its request.
using TraceHeaders = std::vector<std::pair<std::string, std::string>>;

class Provider {
 public:
  virtual ~Provider() = default;
  virtual std::string_view name() const = 0;  // what requests name: "demo", "openai", ...
  virtual std::string default_model() const = 0;
  // `model` is already resolved (request's, else default_model()).
  virtual std::shared_ptr<Generation> start(const protocol::WorkflowRequest& request, std::string model,
                                            std::shared_ptr<GenerationSink> sink, TraceHeaders trace = {}) = 0;
};

}  // namespace chat::providers
