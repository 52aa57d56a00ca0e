// Many provider streams at once in one process on two threads, and what a
// token costs the client in CPU. The numbers are printed (and recorded as test
// properties), not asserted: docs/PROVIDERS.md quotes them.
// PROVIDER_LOAD_STREAMS / PROVIDER_LOAD_TOKENS / PROVIDER_LOAD_GAP_MS change
// the sizes for a bigger run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>

#include "http_client/client_loop.hpp"
#include "http_client/fake_http_server.hpp"
#include "http_client/test_tls.hpp"
#include "providers/http_streaming_provider.hpp"
#include "providers/openai_protocol.hpp"
#include "providers/recording_sink.hpp"
#include "providers/wire_scripts.hpp"

using namespace std::chrono_literals;

namespace chat::providers::test {
namespace {

using namespace http_client::test;

long env_or(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtol(v, nullptr, 10) : fallback;
}

std::string token_event(const std::string& text) {
  return "data: {\"id\":\"chatcmpl-AbCdEf0123456789\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,"
         "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0123456789\",\"choices\":[{\"index\":0,"
         "\"delta\":{\"content\":\"" +
         text + "\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
}

std::string token_text(const std::string& id, long k) { return id + ":" + std::to_string(k) + " "; }

// Streams `tokens` events for the request whose user message is its id, one
// chunk (one TCP write) per token, `gap` apart.
Script load_script(const ReceivedRequest& r, long tokens, std::chrono::milliseconds gap) {
  auto doc = r.json();
  const auto& messages = doc.as_object().at("messages").as_array();
  std::string id(messages.back().at("content").as_string());
  std::vector<std::string> events;
  events.reserve(static_cast<std::size_t>(tokens) + 3);
  for (long k = 0; k < tokens; ++k) events.push_back(token_event(token_text(id, k)));
  events.push_back("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
  events.push_back("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":" + std::to_string(tokens) +
                   ",\"total_tokens\":" + std::to_string(tokens + 9) + "}}\n\n");
  events.push_back("data: [DONE]\n\n");
  return sse_script(events, gap);
}

struct LoadResult {
  std::size_t ok = 0;
  std::chrono::nanoseconds client_cpu{};
  std::chrono::steady_clock::duration wall{};
  std::size_t server_connections = 0;
};

LoadResult run_load(std::size_t streams, long tokens, std::chrono::milliseconds gap, bool tls = false) {
  auto cert = make_certificate("DNS:localhost");
  FakeServer server([&](const ReceivedRequest& r, std::size_t) { return load_script(r, tokens, gap); },
                    tls ? server_tls(cert) : nullptr, 2);
  LoadResult result;
  {
    ClientLoop loop(2);
    auto options = ClientLoop::fast_options();
    options.connect_timeout = 20s;
    options.read_timeout = 30s;
    if (tls) options.extra_ca_pem = cert.cert_pem;
    HttpStreamingSettings s;
    s.api_key = "sk-load";
    s.base_url = server.base_url() + "/v1";
    HttpStreamingProvider provider(loop.client(options), std::make_shared<OpenAiProtocol>(), s);

    std::vector<std::shared_ptr<RecordingSink>> sinks;
    std::vector<std::shared_ptr<Generation>> generations;
    auto started = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < streams; ++i) {
      sinks.push_back(std::make_shared<RecordingSink>());
      generations.push_back(provider.start(chat_request("r" + std::to_string(i)), "gpt-4o-mini", sinks.back()));
    }
    for (std::size_t i = 0; i < streams; ++i) {
      auto& sink = *sinks[i];
      if (!sink.wait(120s)) continue;
      std::string expected;
      for (long k = 0; k < tokens; ++k) expected += token_text("r" + std::to_string(i), k);
      bool good = sink.finish() && sink.finish()->finish_reason == "stop" && sink.finish()->tokens_used == tokens &&
                  sink.text() == expected && sink.pieces().size() == static_cast<std::size_t>(tokens);
      if (good) ++result.ok;
      else ADD_FAILURE() << "stream " << i << ": " << sink.error_code().value_or("finished") << " "
                         << sink.error_message() << " (" << sink.pieces().size() << " pieces)";
    }
    result.wall = std::chrono::steady_clock::now() - started;
    loop.stop();
    result.client_cpu = loop.cpu_time();
  }
  result.server_connections = server.connections();
  return result;
}

TEST(ProviderLoad, TwoHundredConcurrentStreamsAllComplete) {
  auto streams = static_cast<std::size_t>(env_or("PROVIDER_LOAD_STREAMS", 200));
  long tokens = env_or("PROVIDER_LOAD_TOKENS", 40);
  auto gap = std::chrono::milliseconds(env_or("PROVIDER_LOAD_GAP_MS", 10));
  auto r = run_load(streams, tokens, gap);
  EXPECT_EQ(r.ok, streams);
  // Every stream was open at the same time: each needed its own connection.
  EXPECT_EQ(r.server_connections, streams);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(r.wall).count();
  std::cout << "[load] " << streams << " concurrent streams x " << tokens << " tokens (" << gap.count()
            << "ms apart): all complete in " << ms << " ms on 2 client threads\n";
  ::testing::Test::RecordProperty("concurrent_streams", static_cast<int>(streams));
}

void report_cost(bool tls) {
  const std::size_t streams = 50;
  const long tokens = 400;
  auto r = run_load(streams, tokens, 1ms, tls);  // one token per TCP write, like a real provider
  EXPECT_EQ(r.ok, streams);
  double total_tokens = static_cast<double>(streams) * static_cast<double>(tokens);
  double cpu_ms = std::chrono::duration<double, std::milli>(r.client_cpu).count();
  double per_thousand = cpu_ms / total_tokens * 1000.0;
  std::cout << "[cost" << (tls ? ", TLS" : "") << "] " << static_cast<long>(total_tokens) << " tokens over " << streams
            << " streams: client CPU " << cpu_ms << " ms = " << per_thousand << " ms per 1000 tokens\n";
  ::testing::Test::RecordProperty(tls ? "tls_cpu_us_per_1000_tokens" : "cpu_us_per_1000_tokens",
                                  static_cast<int>(per_thousand * 1000));
}

// The connection setup (TCP, and TLS handshakes in the second) is part of
// the figure: 50 streams of 400 tokens, one connection each.
TEST(ProviderLoad, CpuCostPerThousandTokens) { report_cost(false); }
TEST(ProviderLoad, CpuCostPerThousandTokensOverTls) { report_cost(true); }

}  // namespace
}  // namespace chat::providers::test
