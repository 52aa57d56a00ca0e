#pragma once
// What sets one HTTP streaming provider apart from another: its names, the
// request it sends and how its event stream reads. A protocol does no I/O;
// HttpStreamingProvider and StreamGeneration do the rest, the same way for
// every protocol (openai_protocol.*, anthropic_protocol.*).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http_client/client.hpp"
#include "http_client/event_stream_parser.hpp"
#include "protocol/messages.hpp"
#include "providers/provider_errors.hpp"

namespace chat::providers {

// How a provider's event stream ended: a finish reason, or a failure.
struct StreamEnd {
  std::string finish_reason = "stop";  // stop | length
  std::optional<ProviderFailure> failure;
};

// Decodes one attempt's events. Pure: no I/O, so tests feed it directly.
class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;
  // Appends the reply text carried by `event` to `text`; returns the end when
  // the event ends the reply (normally or with an error).
  virtual std::optional<StreamEnd> on_event(const http_client::StreamEvent& event, std::string& text) = 0;
  // The HTTP body ended before an end event.
  virtual StreamEnd on_body_end() = 0;
  virtual std::optional<std::int64_t> tokens_used() const = 0;
  virtual std::string model() const = 0;  // as the provider named it; empty if unknown
};

struct ProtocolNames {
  std::string_view provider;          // "openai": what requests and WORKER_DEFAULT_PROVIDER say
  std::string_view display;           // "OpenAI": what messages for people say
  std::string_view key_setting;       // "OPENAI_API_KEY": named when the key is unset
  std::string_view base_url_setting;  // "OPENAI_BASE_URL": named when it is not an http(s) URL
};

class WireProtocol {
 public:
  virtual ~WireProtocol() = default;
  virtual const ProtocolNames& names() const = 0;
  // Where replies stream from, below the base URL's path ("/chat/completions").
  virtual std::string_view endpoint() const = 0;
  // The headers that authenticate a request (and pin the API version); the
  // provider adds the content-type and accept headers every protocol sends.
  virtual http_client::HttpHeaders auth_headers(const std::string& api_key) const = 0;
  // The JSON body asking `model` to stream its reply to `request`.
  virtual std::string body(const protocol::WorkflowRequest& request, const std::string& model) const = 0;
  // A fresh decoder for one attempt's event stream.
  virtual std::unique_ptr<StreamDecoder> decoder() const = 0;
};

}  // namespace chat::providers
