// The openai provider against a real local HTTP server that speaks the Chat
// Completions streaming format byte for byte, awkward parts included.
#include <gtest/gtest.h>

#include "http_client/client_loop.hpp"
#include "http_client/fake_http_server.hpp"
#include "providers/http_streaming_provider.hpp"
#include "providers/openai_protocol.hpp"
#include "providers/recording_sink.hpp"

using namespace std::chrono_literals;

namespace chat::providers::test {
namespace {

using namespace http_client::test;

constexpr const char* kKey = "sk-test-0123456789abcdef";

std::string delta(std::string_view content) {
  return "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\","
         "\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" +
         std::string(content) + "\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
}
const std::string kRole =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n\n";
std::string finish(std::string_view reason) {
  return "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\","
         "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"" +
         std::string(reason) + "\"}],\"usage\":null}\n\n";
}
const std::string kUsage =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":21,\"completion_tokens\":4,\"total_tokens\":25}}\n\n";
const std::string kDone = "data: [DONE]\n\n";

std::string crlf(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\r\n";
    else out.push_back(c);
  }
  return out;
}

Script happy_stream() {
  return sse_script({kRole, delta("Hel"), delta("lo"), delta(" wor"), delta("ld"), finish("stop"), kUsage, kDone});
}

class OpenAiTest : public ::testing::Test {
 protected:
  std::shared_ptr<HttpStreamingProvider> provider(const FakeServer& server, std::string key = kKey,
                                           http_client::HttpClientOptions options = ClientLoop::fast_options()) {
    HttpStreamingSettings s;
    s.api_key = std::move(key);
    s.base_url = server.base_url() + "/v1";
    s.retry.backoff_base = 10ms;
    return std::make_shared<HttpStreamingProvider>(loop.client(std::move(options)), std::make_shared<OpenAiProtocol>(), s);
  }
  std::shared_ptr<RecordingSink> run(Provider& p, protocol::WorkflowRequest r = chat_request(),
                                     std::string model = "gpt-4o-mini") {
    auto sink = std::make_shared<RecordingSink>();
    generations.push_back(p.start(r, std::move(model), sink));
    EXPECT_TRUE(sink->wait(15s));
    EXPECT_EQ(sink->finals(), 1);
    EXPECT_EQ(sink->calls_after_final(), 0);
    return sink;
  }

  ClientLoop loop;
  std::vector<std::shared_ptr<Generation>> generations;
};

TEST_F(OpenAiTest, StreamsTextChunkByChunkAndSendsTheRightRequest) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); });
  auto p = provider(server);
  auto r = chat_request("What now?");
  r.context.system_prompt = "You are terse.";
  r.context.temperature = 0.25;
  r.context.max_tokens = 64;
  r.context.conversation_history = {{"user", "Hi"}, {"assistant", "Hello!"}, {"system", "note"}};
  auto sink = run(*p, r);

  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"Hel", "lo", " wor", "ld"}));
  ASSERT_TRUE(sink->finish());
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_EQ(sink->finish()->tokens_used, 4);  // completion_tokens
  EXPECT_EQ(sink->finish()->model, "gpt-4o-mini-2024-07-18");

  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& req = requests[0];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.target, "/v1/chat/completions");
  EXPECT_EQ(req.header("authorization"), std::string("Bearer ") + kKey);
  EXPECT_EQ(req.header("content-type"), "application/json");
  EXPECT_EQ(req.header("accept"), "text/event-stream");
  auto body = req.json().as_object();
  EXPECT_EQ(body.at("model"), "gpt-4o-mini");
  EXPECT_EQ(body.at("stream"), true);
  EXPECT_EQ(body.at("stream_options").at("include_usage"), true);
  EXPECT_EQ(body.at("temperature").as_double(), 0.25);
  EXPECT_EQ(body.at("max_tokens").as_int64(), 64);
  const auto& m = body.at("messages").as_array();
  ASSERT_EQ(m.size(), 5u);
  std::vector<std::pair<std::string, std::string>> got;
  for (const auto& v : m) got.emplace_back(v.at("role").as_string(), v.at("content").as_string());
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{{"system", "You are terse."},
                                                                  {"user", "Hi"},
                                                                  {"assistant", "Hello!"},
                                                                  {"system", "note"},
                                                                  {"user", "What now?"}}));
}

TEST_F(OpenAiTest, CrlfLineEndingsAndKeepAliveComments) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return sse_script({crlf(": keep-alive\n\n"), crlf(kRole), crlf(": ping\n\n"), crlf(delta("A")),
                       crlf(delta("B")), crlf(finish("length")), crlf(kUsage), crlf(kDone)});
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(sink->finish()->finish_reason, "length");
}

TEST_F(OpenAiTest, MultiByteCharacterSplitAcrossTcpWritesAndChunks) {
  // "é" (2 bytes), "世" (3 bytes), "😀" (4 bytes), each cut inside the character.
  std::string e1 = delta("caf\xC3\xA9");
  std::string e2 = delta("\xE4\xB8\x96");
  std::string e3 = delta("\xF0\x9F\x98\x80!");
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    std::string raw1 = chunk(e1);
    auto cut1 = raw1.find("\xC3") + 1;
    auto cut2 = e2.find("\xE4") + 2;
    std::string raw3 = chunk(e3);
    auto cut3 = raw3.find("\xF0") + 3;
    return Script{write(sse_head()),
                  write(raw1.substr(0, cut1)), sleep(30ms), write(raw1.substr(cut1)),      // split TCP writes
                  write(chunk(e2.substr(0, cut2))), sleep(30ms), write(chunk(e2.substr(cut2))),  // split chunks
                  write(raw3.substr(0, cut3)), sleep(30ms), write(raw3.substr(cut3)),
                  write(chunk(finish("stop") + kDone)), write(last_chunk())};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"caf\xC3\xA9", "\xE4\xB8\x96", "\xF0\x9F\x98\x80!"}));
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_EQ(sink->finish()->tokens_used, std::nullopt);  // no usage event was sent
}

TEST_F(OpenAiTest, SlowStreamArrivesTokenByToken) {
  std::vector<std::string> events{kRole};
  for (int i = 0; i < 10; ++i) events.push_back(delta("t" + std::to_string(i) + " "));
  events.push_back(finish("stop"));
  events.push_back(kDone);
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return sse_script(events, 40ms); });
  auto p = provider(server);
  auto sink = std::make_shared<RecordingSink>();
  auto started = std::chrono::steady_clock::now();
  auto g = p->start(chat_request(), "gpt-4o-mini", sink);
  ASSERT_TRUE(sink->wait_text());
  auto first = std::chrono::steady_clock::now() - started;
  ASSERT_TRUE(sink->wait());
  auto total = *sink->ended_at() - started;
  EXPECT_EQ(sink->pieces().size(), 10u);
  EXPECT_LT(first, total - 250ms);  // text was passed on as it came, not at the end
}

TEST_F(OpenAiTest, MidStreamDisconnectIsAnErrorAfterTheTextSoFar) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(kRole + delta("Part"))), sleep(20ms), write(chunk(delta("ial"))),
                  sleep(20ms), close()};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "Partial");
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_EQ(server.requests().size(), 1u);  // never retried after text went out
}

TEST_F(OpenAiTest, StreamEndingWithoutDoneOrFinishReasonIsBadResponse) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return sse_script({kRole, delta("x")}); });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "x");
  EXPECT_EQ(sink->error_code(), "provider_bad_response");
}

TEST_F(OpenAiTest, FinishReasonWithoutDoneStillFinishes) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return sse_script({delta("x"), finish("stop")}); });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
}

TEST_F(OpenAiTest, MalformedEventIsBadResponse) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return sse_script({delta("ok"), "data: {oops\n\n"}); });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_bad_response");
}

TEST_F(OpenAiTest, ContentFilterEndsWithAnError) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return sse_script({delta("I can"), finish("content_filter"), kDone});
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "I can");
  EXPECT_EQ(sink->error_code(), "content_filtered");
}

TEST_F(OpenAiTest, Unauthorized401NeverEchoesTheKey) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(response(401, "application/json",
                                 std::string(R"({"error":{"message":"Incorrect API key provided: )") + kKey +
                                     R"(. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})"))};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_auth_failed");
  EXPECT_NE(sink->error_message().find("Incorrect API key provided"), std::string::npos);
  EXPECT_EQ(sink->error_message().find(kKey), std::string::npos);
  EXPECT_EQ(sink->error_message().find("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);  // not retried
}

TEST_F(OpenAiTest, UnknownModel404) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(response(404, "application/json",
                                 R"({"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}})"))};
  });
  auto p = provider(server);
  auto sink = run(*p, chat_request(), "gpt-9");
  EXPECT_EQ(sink->error_code(), "model_not_found");
  EXPECT_NE(sink->error_message().find("gpt-9"), std::string::npos);
}

TEST_F(OpenAiTest, RateLimited429HonoursRetryAfterThenSucceeds) {
  FakeServer server([](const ReceivedRequest&, std::size_t index) {
    if (index == 0)
      return Script{write(response(429, "application/json",
                                   R"({"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","code":"rate_limit_exceeded"}})",
                                   "Retry-After: 1\r\n"))};
    return happy_stream();
  });
  auto p = provider(server);
  auto started = std::chrono::steady_clock::now();
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "Hello world");
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_GE(*sink->ended_at() - started, 950ms);
  EXPECT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.connections(), 1u);  // the 429 left the connection reusable
}

TEST_F(OpenAiTest, RateLimitedBeyondRetriesIsReported) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(response(429, "application/json", R"({"error":{"message":"quota"}})", "retry-after-ms: 5\r\n"))};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "rate_limited");
  EXPECT_EQ(server.requests().size(), 3u);  // 1 + WORKER_PROVIDER_MAX_RETRIES (2)
}

TEST_F(OpenAiTest, ServerError500RetriedThenReported) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(response(500, "application/json", R"({"error":{"message":"The server had an error"}})"))};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("500"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 3u);
}

TEST_F(OpenAiTest, ServerError503OnceThenSuccess) {
  FakeServer server([](const ReceivedRequest&, std::size_t index) {
    if (index == 0) return Script{write(response(503, "text/plain", "busy")), close()};
    return happy_stream();
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "Hello world");
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST_F(OpenAiTest, ServerThatNeverAnswersTimesOut) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return Script{hang()}; });
  auto options = ClientLoop::fast_options();
  options.read_timeout = 300ms;
  auto p = provider(server, kKey, options);
  auto started = std::chrono::steady_clock::now();
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_timeout");
  EXPECT_LT(*sink->ended_at() - started, 2s);
  EXPECT_EQ(server.requests().size(), 1u);  // read timeouts are not retried
  EXPECT_TRUE(server.wait_client_closes(1, 2s));
}

TEST_F(OpenAiTest, StallMidStreamTimesOut) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(delta("so far"))), hang()};
  });
  auto options = ClientLoop::fast_options();
  options.read_timeout = 300ms;
  auto p = provider(server, kKey, options);
  auto sink = run(*p);
  EXPECT_EQ(sink->text(), "so far");
  EXPECT_EQ(sink->error_code(), "provider_timeout");
}

TEST_F(OpenAiTest, ConnectionRefusedIsUnavailableAfterRetries) {
  std::string base;
  {
    FakeServer gone([](const ReceivedRequest&, std::size_t) { return Script{}; });
    base = gone.base_url();
  }  // the port is closed now
  HttpStreamingSettings s;
  s.api_key = kKey;
  s.base_url = base + "/v1";
  s.retry.backoff_base = 5ms;
  HttpStreamingProvider p(loop.client(), std::make_shared<OpenAiProtocol>(), s);
  auto sink = run(p);
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("cannot connect"), std::string::npos);
}

TEST_F(OpenAiTest, MissingKeyIsNotConfigured) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); });
  auto p = provider(server, "");
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_not_configured");
  EXPECT_EQ(sink->error_message(), "OPENAI_API_KEY is not set");
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(OpenAiTest, JsonInsteadOfAnEventStreamIsBadResponse) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(response(200, "application/json", R"({"choices":[{"message":{"content":"hi"}}]})"))};
  });
  auto p = provider(server);
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_bad_response");
}

TEST_F(OpenAiTest, CancelMidStreamFinishesPromptlyAndClosesTheConnection) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(kRole + delta("first"))), hang()};
  });
  auto p = provider(server);
  auto sink = std::make_shared<RecordingSink>();
  auto g = p->start(chat_request(), "gpt-4o-mini", sink);
  ASSERT_TRUE(sink->wait_text());
  auto cancelled_at = std::chrono::steady_clock::now();
  g->cancel();
  g->cancel();  // twice is harmless
  ASSERT_TRUE(sink->wait(2s));
  EXPECT_LT(*sink->ended_at() - cancelled_at, 200ms);
  ASSERT_TRUE(sink->finish());
  EXPECT_EQ(sink->finish()->finish_reason, "cancelled");
  EXPECT_EQ(sink->text(), "first");
  EXPECT_EQ(sink->finals(), 1);
  EXPECT_TRUE(server.wait_client_closes(1, 1s));  // the provider's side sees the connection go
  EXPECT_EQ(sink->calls_after_final(), 0);
}

TEST_F(OpenAiTest, CancelWhileWaitingForTheAnswerClosesTheConnection) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return Script{hang()}; });
  auto p = provider(server);
  auto sink = std::make_shared<RecordingSink>();
  auto g = p->start(chat_request(), "gpt-4o-mini", sink);
  for (int i = 0; i < 200 && server.requests().empty(); ++i) std::this_thread::sleep_for(5ms);
  g->cancel();
  ASSERT_TRUE(sink->wait(1s));
  EXPECT_EQ(sink->finish()->finish_reason, "cancelled");
  EXPECT_TRUE(server.wait_client_closes(1, 2s));
}

TEST_F(OpenAiTest, CancelRightAfterStartSendsNoRequest) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); });
  ClientLoop paused(0);  // start and cancel are both queued before either runs
  HttpStreamingSettings s;
  s.api_key = kKey;
  s.base_url = server.base_url() + "/v1";
  HttpStreamingProvider p(paused.client(), std::make_shared<OpenAiProtocol>(), s);
  auto sink = std::make_shared<RecordingSink>();
  auto g = p.start(chat_request(), "gpt-4o-mini", sink);
  g->cancel();
  paused.add_threads(1);
  ASSERT_TRUE(sink->wait(1s));
  EXPECT_EQ(sink->finish()->finish_reason, "cancelled");
  EXPECT_TRUE(sink->pieces().empty());
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(OpenAiTest, KeepAliveConnectionIsReused) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return happy_stream(); });
  HttpStreamingSettings s;
  s.api_key = kKey;
  s.base_url = server.base_url() + "/v1";
  auto client = loop.client();
  HttpStreamingProvider p(client, std::make_shared<OpenAiProtocol>(), s);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run(p)->text(), "Hello world");
    // The reply can end (at [DONE]) a moment before the body's last chunk
    // frees the connection.
    for (int wait = 0; wait < 200 && client->pool().idle() == 0; ++wait) std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(server.requests().size(), 3u);
  EXPECT_EQ(server.connections(), 1u);
  EXPECT_EQ(client->stats().connections_reused, 2u);
}

TEST_F(OpenAiTest, StalePooledConnectionIsReplacedTransparently) {
  // The server closes each connection after its reply, without saying so.
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    auto s = happy_stream();
    s.push_back(sleep(20ms));
    s.push_back(close());
    return s;
  });
  auto p = provider(server);
  EXPECT_EQ(run(*p)->text(), "Hello world");
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(run(*p)->text(), "Hello world");
  EXPECT_EQ(server.connections(), 2u);
}

}  // namespace
}  // namespace chat::providers::test
