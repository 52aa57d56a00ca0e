#pragma once
// The Anthropic Messages streaming wire format, without I/O: the request
// (POST {base}/v1/messages with x-api-key and anthropic-version) and the
// decoder of its named events.

#include <memory>
#include <string>

#include "http_client/client.hpp"
#include "protocol/messages.hpp"
#include "providers/wire_protocol.hpp"

namespace chat::providers {

// max_tokens is required by the API; this is used when the request sets none.
inline constexpr std::int64_t kAnthropicDefaultMaxTokens = 1024;

// tokens_used is usage.output_tokens (message_delta's count is cumulative):
// the tokens of this reply, as for openai. stop_reason max_tokens becomes
// length, refusal the content_filtered error, everything else stop.
class AnthropicDecoder final : public StreamDecoder {
 public:
  std::optional<StreamEnd> on_event(const http_client::StreamEvent& event, std::string& text) override;
  StreamEnd on_body_end() override;
  std::optional<std::int64_t> tokens_used() const override { return output_tokens_; }
  std::string model() const override { return model_; }
  std::optional<std::int64_t> input_tokens() const { return input_tokens_; }

 private:
  StreamEnd end_from_stop_reason() const;

  std::string model_;
  std::string stop_reason_;
  std::optional<std::int64_t> input_tokens_;
  std::optional<std::int64_t> output_tokens_;
};

// ANTHROPIC_BASE_URL is without the version path.
class AnthropicProtocol final : public WireProtocol {
 public:
  // `version` is the anthropic-version header (ANTHROPIC_VERSION).
  explicit AnthropicProtocol(std::string version) : version_(std::move(version)) {}

  const ProtocolNames& names() const override { return kNames; }
  std::string_view endpoint() const override { return "/v1/messages"; }
  http_client::HttpHeaders auth_headers(const std::string& api_key) const override;
  // The API wants the system prompt top-level and strictly alternating
  // user/assistant turns that start with a user turn, so: system history
  // entries join system_prompt in "system"; consecutive turns of one role are
  // merged; empty turns are dropped (the API rejects them); leading assistant
  // turns (history cut off mid-conversation) are dropped; the user's message
  // joins a trailing user turn. temperature is clamped to 0..1.
  std::string body(const protocol::WorkflowRequest& request, const std::string& model) const override;
  std::unique_ptr<StreamDecoder> decoder() const override { return std::make_unique<AnthropicDecoder>(); }

 private:
  static constexpr ProtocolNames kNames{"anthropic", "Anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"};
  std::string version_;
};

// The failure for the error type of an Anthropic error event.
ProviderFailure anthropic_failure(std::string_view type, std::string_view message);

}  // namespace chat::providers
