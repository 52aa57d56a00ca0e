#pragma once
// The OpenAI Chat Completions streaming wire format, without I/O: the request
// (POST {base}/chat/completions, stream with usage) and the decoder of its
// "data:" events. Any OpenAI-compatible server (Ollama, vLLM, llama.cpp
// server, ...) speaks the same format.

#include <memory>
#include <string>

#include "http_client/client.hpp"
#include "protocol/messages.hpp"
#include "providers/provider_stream.hpp"

namespace chat::providers {

// The JSON body: messages are system_prompt, conversation_history (in order,
// system entries kept in place), then the user's message.
std::string openai_request_body(const protocol::WorkflowRequest& request, const std::string& model);

// `base` is OPENAI_BASE_URL parsed (it includes the version path).
http_client::HttpRequest openai_http_request(const http_client::HttpUrl& base, const std::string& api_key,
                                const protocol::WorkflowRequest& request, const std::string& model);

// tokens_used is usage.completion_tokens: the tokens of this reply, as the
// anthropic provider and the demo count them. finish_reason "length" stays
// length; "stop", "tool_calls" and "function_call" become stop;
// "content_filter" ends the reply with the content_filtered error.
class OpenAiDecoder final : public StreamDecoder {
 public:
  std::optional<StreamEnd> on_event(const http_client::StreamEvent& event, std::string& text) override;
  StreamEnd on_body_end() override;
  std::optional<std::int64_t> tokens_used() const override { return tokens_; }
  std::string model() const override { return model_; }

 private:
  StreamEnd end_from_finish_reason() const;

  std::string model_;
  std::string finish_reason_;  // as OpenAI sent it
  std::optional<std::int64_t> tokens_;
};

class OpenAiProtocol final : public StreamProtocol {
 public:
  std::string_view display_name() const override { return "OpenAI"; }
  std::unique_ptr<StreamDecoder> decoder() const override { return std::make_unique<OpenAiDecoder>(); }
};

}  // namespace chat::providers
