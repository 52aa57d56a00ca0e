#pragma once
// An AI provider that streams a reply (SPEC section 9). Implementations: demo
// (built in), openai, anthropic. A provider runs many generations at once on the
// executor it was given, without a thread per generation.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/messages.hpp"

namespace chat::providers {

struct Finish {
  std::string finish_reason;  // stop | length | error | cancelled
  std::optional<std::int64_t> tokens_used;
  std::string model;
};

// Receives one generation's output. Calls arrive one at a time, in order; the
// stream ends with exactly one on_finish or on_error.
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

class Provider {
 public:
  virtual ~Provider() = default;
  virtual std::string_view name() const = 0;
  virtual std::string default_model() const = 0;
  // `model` is already resolved (request's, else default_model()).
  virtual std::shared_ptr<Generation> start(const protocol::WorkflowRequest& request, std::string model,
                                            std::shared_ptr<GenerationSink> sink) = 0;
};

}  // namespace chat::providers
