#pragma once
// The OpenAI Chat Completions streaming wire format, without I/O: the request
// (POST {base}/chat/completions with a Bearer key, stream with usage) and the
// decoder of its "data:" events. Any OpenAI-compatible server (Ollama, vLLM,
// llama.cpp server, ...) speaks the same format.

#include <memory>
#include <string>

#include "http_client/client.hpp"
#include "protocol/messages.hpp"
#include "providers/wire_protocol.hpp"

namespace chat::providers {

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

// OPENAI_BASE_URL includes the version path, as the official SDKs take it.
class OpenAiProtocol final : public WireProtocol {
 public:
  const ProtocolNames& names() const override { return kNames; }
  std::string_view endpoint() const override { return "/chat/completions"; }
  http_client::HttpHeaders auth_headers(const std::string& api_key) const override;
  // Messages are system_prompt, conversation_history (in order, system
  // entries kept in place), then the user's message.
  std::string body(const protocol::WorkflowRequest& request, const std::string& model) const override;
  std::unique_ptr<StreamDecoder> decoder() const override { return std::make_unique<OpenAiDecoder>(); }

 private:
  static constexpr ProtocolNames kNames{"openai", "OpenAI", "OPENAI_API_KEY", "OPENAI_BASE_URL"};
};

}  // namespace chat::providers
