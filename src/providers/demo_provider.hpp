#pragma once
// The built-in `demo` provider: a deterministic multi-sentence reply that quotes
// the user's message, streamed a few words at a time at a configurable pace.
// Needs no network; runs any number of generations on one executor.

#include <boost/asio/any_io_executor.hpp>

#include <chrono>

#include "providers/provider.hpp"

namespace chat::providers {

struct DemoOptions {
  std::chrono::milliseconds chunk_delay{40};  // 0: as fast as the executor goes
  unsigned words_per_chunk = 3;
};

class DemoProvider final : public Provider {
 public:
  DemoProvider(boost::asio::any_io_executor executor, DemoOptions options);

  std::string_view name() const override { return "demo"; }
  static constexpr std::string_view kDefaultModel = "demo-1";

  std::string default_model() const override { return std::string(kDefaultModel); }
  std::shared_ptr<Generation> start(const protocol::WorkflowRequest& request, std::string model,
                                    std::shared_ptr<GenerationSink> sink, TraceHeaders trace = {}) override;

  // The reply text for a message (what the chunks add up to).
  static std::string reply_for(const protocol::WorkflowRequest& request);

 private:
  boost::asio::any_io_executor executor_;
  DemoOptions options_;
};

}  // namespace chat::providers
