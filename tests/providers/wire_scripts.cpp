#include "providers/wire_scripts.hpp"

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "providers/anthropic_protocol.hpp"
#include "providers/openai_protocol.hpp"

namespace json = boost::json;
using namespace std::chrono_literals;

namespace chat::providers::test {
namespace {

std::string data_event(const json::value& data) { return "data: " + json::serialize(data) + "\n\n"; }

// Chat Completions chunks as OpenAI sends them, nulls included.
class OpenAiScript final : public WireScript {
 public:
  std::shared_ptr<const WireProtocol> protocol() const override { return std::make_shared<OpenAiProtocol>(); }
  std::string key() const override { return "sk-test-0123456789abcdef"; }
  std::string base_url(const http_client::test::FakeServer& server) const override { return server.base_url() + "/v1"; }
  std::string target() const override { return "/v1/chat/completions"; }
  std::string model() const override { return "gpt-4o-mini"; }
  std::string reply_model() const override { return "gpt-4o-mini-2024-07-18"; }

  // The role-only first delta: no text.
  std::string opening() const override {
    return chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}},
                  {"logprobs", nullptr}, {"finish_reason", nullptr}});
  }
  std::string text(std::string_view piece) const override {
    return chunk({{"index", 0}, {"delta", {{"content", piece}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
  }
  // The finish reason, then the usage-only event ("choices": []).
  std::string finish(Ending ending, int tokens) const override {
    const char* reason = ending == Ending::stop ? "stop" : ending == Ending::length ? "length" : "content_filter";
    json::object usage{{"prompt_tokens", 21}, {"completion_tokens", tokens}, {"total_tokens", 21 + tokens}};
    return chunk({{"index", 0}, {"delta", json::object{}}, {"logprobs", nullptr}, {"finish_reason", reason}}) +
           data_event(json::object{{"id", "chatcmpl-1"}, {"object", "chat.completion.chunk"}, {"created", 1},
                                   {"model", reply_model()}, {"choices", json::array{}}, {"usage", usage}});
  }
  std::string end() const override { return "data: [DONE]\n\n"; }
  std::string error_body(unsigned status, std::string_view message) const override {
    return json::serialize(json::object{
        {"error", {{"message", message}, {"type", status >= 500 ? "server_error" : "invalid_request_error"},
                   {"param", nullptr}, {"code", nullptr}}}});
  }

 private:
  std::string chunk(json::object choice) const {
    return data_event(json::object{{"id", "chatcmpl-1"}, {"object", "chat.completion.chunk"}, {"created", 1},
                                   {"model", reply_model()}, {"system_fingerprint", "fp_1"},
                                   {"choices", json::array{std::move(choice)}}, {"usage", nullptr}});
  }
};

// Messages API events: named, with the type repeated inside.
class AnthropicScript final : public WireScript {
 public:
  std::shared_ptr<const WireProtocol> protocol() const override {
    return std::make_shared<AnthropicProtocol>("2023-06-01");
  }
  std::string key() const override { return "sk-ant-api03-test-secret-key"; }
  std::string base_url(const http_client::test::FakeServer& server) const override { return server.base_url(); }
  std::string target() const override { return "/v1/messages"; }
  std::string model() const override { return "claude-haiku-4-5"; }
  std::string reply_model() const override { return "claude-haiku-4-5-20251001"; }

  // message_start (model, usage), the text block's start, a ping.
  std::string opening() const override {
    json::object message{{"id", "msg_01"},         {"type", "message"},      {"role", "assistant"},
                         {"content", json::array{}}, {"model", reply_model()}, {"stop_reason", nullptr},
                         {"stop_sequence", nullptr},
                         {"usage", {{"input_tokens", 25}, {"output_tokens", 1}}}};
    return event("message_start", {{"type", "message_start"}, {"message", message}}) +
           event("content_block_start",
                 {{"type", "content_block_start"}, {"index", 0}, {"content_block", {{"type", "text"}, {"text", ""}}}}) +
           event("ping", {{"type", "ping"}});
  }
  std::string text(std::string_view piece) const override {
    return event("content_block_delta", {{"type", "content_block_delta"},
                                         {"index", 0},
                                         {"delta", {{"type", "text_delta"}, {"text", piece}}}});
  }
  // The block's end, then message_delta with the stop reason and the
  // cumulative output_tokens.
  std::string finish(Ending ending, int tokens) const override {
    const char* reason = ending == Ending::stop ? "end_turn" : ending == Ending::length ? "max_tokens" : "refusal";
    return event("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}) +
           event("message_delta", {{"type", "message_delta"},
                                   {"delta", {{"stop_reason", reason}, {"stop_sequence", nullptr}}},
                                   {"usage", {{"output_tokens", tokens}}}});
  }
  std::string end() const override { return event("message_stop", {{"type", "message_stop"}}); }
  std::string error_body(unsigned status, std::string_view message) const override {
    const char* type = status == 401   ? "authentication_error"
                       : status == 403 ? "permission_error"
                       : status == 404 ? "not_found_error"
                       : status == 429 ? "rate_limit_error"
                       : status == 529 ? "overloaded_error"
                       : status >= 500 ? "api_error"
                                       : "invalid_request_error";
    return json::serialize(json::object{{"type", "error"}, {"error", {{"type", type}, {"message", message}}}});
  }

 private:
  static std::string event(std::string_view name, const json::object& data) {
    return "event: " + std::string(name) + "\n" + data_event(data);
  }
};

}  // namespace

Script WireScript::reply(const std::vector<std::string>& pieces, int tokens) const {
  std::vector<std::string> events{opening()};
  for (const auto& piece : pieces) events.push_back(text(piece));
  events.push_back(finish(Ending::stop, tokens));
  events.push_back(end());
  return http_client::test::sse_script(events);
}

const WireScript& openai_wire() {
  static const OpenAiScript wire;
  return wire;
}

const WireScript& anthropic_wire() {
  static const AnthropicScript wire;
  return wire;
}

protocol::WorkflowRequest chat_request(std::string message) {
  protocol::WorkflowRequest r;
  r.message_id = "m-1";
  r.session_id = "s-1";
  r.user_id = "u-1";
  r.message = std::move(message);
  r.correlation_id = "c-1";
  return r;
}

HttpStreamingSettings ProviderHarness::settings(const WireScript& wire,
                                                const http_client::test::FakeServer& server) const {
  HttpStreamingSettings s;
  s.api_key = wire.key();
  s.base_url = wire.base_url(server);
  s.default_model = wire.model();
  s.retry.backoff_base = 10ms;  // retries without the real half-second waits
  return s;
}

std::shared_ptr<HttpStreamingProvider> ProviderHarness::provider(const WireScript& wire,
                                                                 const http_client::test::FakeServer& server,
                                                                 http_client::HttpClientOptions options) {
  return std::make_shared<HttpStreamingProvider>(loop.client(std::move(options)), wire.protocol(),
                                                 settings(wire, server));
}

std::shared_ptr<RecordingSink> ProviderHarness::run(Provider& provider, const std::string& model,
                                                    const protocol::WorkflowRequest& request) {
  auto sink = std::make_shared<RecordingSink>();
  generations.push_back(provider.start(request, model, sink));
  EXPECT_TRUE(sink->wait(15s));
  EXPECT_EQ(sink->finals(), 1);
  EXPECT_EQ(sink->calls_after_final(), 0);
  return sink;
}

std::shared_ptr<RecordingSink> ProviderHarness::run(const WireScript& wire, const http_client::test::FakeServer& server,
                                                    const protocol::WorkflowRequest& request) {
  return run(*provider(wire, server), wire.model(), request);
}

}  // namespace chat::providers::test
