// What every HTTP streaming provider does, checked for each wire protocol
// (openai, anthropic) against a real local HTTP(S) server that speaks it
// byte for byte: streaming, awkward bytes, errors and retries, timeouts,
// cancel, keep-alive, TLS and proxy failures. What only one protocol does is
// in openai_provider_test.cpp and anthropic_provider_test.cpp.
//
// Waits are on events with generous limits: a slow machine (sanitizers, two
// shared cores) makes a test slower, not red.
#include <gtest/gtest.h>

#include "http_client/test_tls.hpp"
#include "providers/wire_scripts.hpp"

using namespace std::chrono_literals;

namespace chat::providers::test {
namespace {

using namespace http_client::test;

std::string crlf(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\r\n";
    else out.push_back(c);
  }
  return out;
}

class HttpStreamingProviderTest : public ::testing::TestWithParam<const WireScript*>, protected ProviderHarness {
 protected:
  const WireScript& wire() const { return *GetParam(); }
  std::shared_ptr<HttpStreamingProvider> provider(const FakeServer& server,
                                                  http_client::HttpClientOptions options = ClientLoop::fast_options()) {
    return ProviderHarness::provider(wire(), server, std::move(options));
  }
  std::shared_ptr<RecordingSink> run(Provider& p) { return ProviderHarness::run(p, wire().model()); }
  Script happy_reply() const { return wire().reply({"Hel", "lo", " wor", "ld"}, 4); }
  // A read timeout out of reach of the tests' waits: a stream the server
  // holds open ends only by a cancel.
  static http_client::HttpClientOptions patient_options() {
    auto options = ClientLoop::fast_options();
    options.read_timeout = 60s;
    return options;
  }
};

TEST_P(HttpStreamingProviderTest, StreamsTextPieceByPiece) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return happy_reply(); });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"Hel", "lo", " wor", "ld"}));
  ASSERT_TRUE(sink->finish());
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_EQ(sink->finish()->tokens_used, 4);
  EXPECT_EQ(sink->finish()->model, wire().reply_model());

  auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "POST");
  EXPECT_EQ(requests[0].target, wire().target());
  EXPECT_EQ(requests[0].header("content-type"), "application/json");
  EXPECT_EQ(requests[0].header("accept"), "text/event-stream");
}

TEST_P(HttpStreamingProviderTest, LengthLimitFinishesWithLength) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({wire().opening(), wire().text("cut"), wire().finish(Ending::length, 1), wire().end()});
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->text(), "cut");
  EXPECT_EQ(sink->finish()->finish_reason, "length");
}

TEST_P(HttpStreamingProviderTest, CrlfLineEndingsAndKeepAliveComments) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({crlf(": keep-alive\n\n"), crlf(wire().opening()), crlf(": ping\n\n"), crlf(wire().text("A")),
                       crlf(wire().text("B")), crlf(wire().finish(Ending::length, 2)), crlf(wire().end())});
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(sink->finish()->finish_reason, "length");
  EXPECT_EQ(sink->finish()->tokens_used, 2);
}

TEST_P(HttpStreamingProviderTest, MultiByteCharacterSplitAcrossTcpWritesAndChunks) {
  // "é" (2 bytes), "世" (3 bytes), "😀" (4 bytes), each cut inside the character.
  std::string e1 = wire().text("caf\xC3\xA9");
  std::string e2 = wire().text("\xE4\xB8\x96");
  std::string e3 = wire().text("\xF0\x9F\x98\x80!");
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    std::string raw1 = chunk(wire().opening() + e1);
    auto cut1 = raw1.find("\xC3") + 1;
    auto cut2 = e2.find("\xE4") + 2;
    std::string raw3 = chunk(e3);
    auto cut3 = raw3.find("\xF0") + 3;
    return Script{write(sse_head()),
                  write(raw1.substr(0, cut1)), sleep(30ms), write(raw1.substr(cut1)),            // split TCP writes
                  write(chunk(e2.substr(0, cut2))), sleep(30ms), write(chunk(e2.substr(cut2))),  // split chunks
                  write(raw3.substr(0, cut3)), sleep(30ms), write(raw3.substr(cut3)),
                  write(chunk(wire().finish(Ending::stop, 3) + wire().end())), write(last_chunk())};
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->pieces(), (std::vector<std::string>{"caf\xC3\xA9", "\xE4\xB8\x96", "\xF0\x9F\x98\x80!"}));
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
}

TEST_P(HttpStreamingProviderTest, SlowStreamArrivesPieceByPiece) {
  // Ten pieces 40 ms apart, then the stream stays open: every piece has to
  // reach the sink while the reply is still unfinished.
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    Script s{write(sse_head()), write(chunk(wire().opening()))};
    for (int i = 0; i < 10; ++i) {
      s.push_back(sleep(40ms));
      s.push_back(write(chunk(wire().text("t" + std::to_string(i) + " "))));
    }
    s.push_back(hang());
    return s;
  });
  auto p = provider(server, patient_options());
  auto sink = std::make_shared<RecordingSink>();
  auto g = p->start(chat_request(), wire().model(), sink);
  ASSERT_TRUE(sink->wait_text(10));
  EXPECT_EQ(sink->finals(), 0);
  EXPECT_EQ(sink->text(), "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 ");
  g->cancel();
  ASSERT_TRUE(sink->wait(10s));
  EXPECT_EQ(sink->pieces().size(), 10u);
}

TEST_P(HttpStreamingProviderTest, MidStreamDisconnectIsAnErrorAfterTheTextSoFar) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(wire().opening() + wire().text("Part"))), sleep(20ms),
                  write(chunk(wire().text("ial"))), sleep(20ms), close()};
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->text(), "Partial");
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_EQ(server.requests().size(), 1u);  // never retried after text went out
}

// The reply's end was read (how it finished) and the connection is lost before
// the stream's last event: the reply is whole, and ends as it said it did.
TEST_P(HttpStreamingProviderTest, AConnectionLostAfterTheReplyFinishedEndsItAsFinished) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(wire().opening() + wire().text("Whole"))),
                  write(chunk(wire().finish(Ending::stop, 3))), sleep(20ms), close()};
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->text(), "Whole");
  EXPECT_FALSE(sink->error_code()) << sink->error_message();
  ASSERT_TRUE(sink->finish());
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_P(HttpStreamingProviderTest, StreamEndingWithoutAnEndOrFinishReasonIsBadResponse) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({wire().opening(), wire().text("x")});
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->text(), "x");
  EXPECT_EQ(sink->error_code(), "provider_bad_response");
}

TEST_P(HttpStreamingProviderTest, FinishReasonWithoutTheEndEventStillFinishes) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({wire().opening(), wire().text("x"), wire().finish(Ending::stop, 1)});
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
}

TEST_P(HttpStreamingProviderTest, MalformedEventIsBadResponse) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({wire().opening(), wire().text("ok"), "data: {oops\n\n"});
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->error_code(), "provider_bad_response");
}

TEST_P(HttpStreamingProviderTest, ContentFilterEndsWithAnError) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return sse_script({wire().opening(), wire().text("I can"), wire().finish(Ending::content_filter, 2), wire().end()});
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->text(), "I can");
  EXPECT_EQ(sink->error_code(), "content_filtered");
}

TEST_P(HttpStreamingProviderTest, Unauthorized401NeverEchoesTheKey) {
  // OpenAI's 401 quotes the key it got.
  std::string key = wire().key();
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(response(401, "application/json",
                                 wire().error_body(401, "Incorrect API key provided: " + key +
                                                            ". You can find your API key in your account.")))};
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->error_code(), "provider_auth_failed");
  EXPECT_NE(sink->error_message().find("Incorrect API key provided"), std::string::npos);
  EXPECT_EQ(sink->error_message().find(key), std::string::npos);
  EXPECT_EQ(sink->error_message().find(key.substr(key.size() / 2)), std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);  // not retried
}

TEST_P(HttpStreamingProviderTest, UnknownModel404IsNotRetried) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(response(404, "application/json", wire().error_body(404, "model: no-such-model")))};
  });
  auto sink = ProviderHarness::run(*provider(server), "no-such-model");
  EXPECT_EQ(sink->error_code(), "model_not_found");
  EXPECT_NE(sink->error_message().find("no-such-model"), std::string::npos);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST_P(HttpStreamingProviderTest, RateLimited429HonoursRetryAfterThenSucceeds) {
  FakeServer server([&](const ReceivedRequest&, std::size_t index) {
    if (index == 0)
      return Script{write(response(429, "application/json", wire().error_body(429, "Rate limit reached"),
                                   "Retry-After: 1\r\n"))};
    return happy_reply();
  });
  auto started = std::chrono::steady_clock::now();
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->text(), "Hello world");
  EXPECT_EQ(sink->finish()->finish_reason, "stop");
  EXPECT_GE(*sink->ended_at() - started, 950ms);
  EXPECT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.connections(), 1u);  // the 429 left the connection reusable
}

TEST_P(HttpStreamingProviderTest, RateLimitedBeyondRetriesIsReported) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(response(429, "application/json", wire().error_body(429, "quota"), "retry-after-ms: 5\r\n"))};
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->error_code(), "rate_limited");
  EXPECT_EQ(server.requests().size(), 3u);  // 1 + WORKER_PROVIDER_MAX_RETRIES (2)
}

TEST_P(HttpStreamingProviderTest, ServerErrorsAreRetriedThenReported) {
  for (unsigned status : {500u, 529u}) {  // 529: Anthropic's "overloaded"
    FakeServer server([&](const ReceivedRequest&, std::size_t) {
      return Script{write(response(status, "application/json", wire().error_body(status, "Overloaded")))};
    });
    auto sink = run(*provider(server));
    EXPECT_EQ(sink->error_code(), "provider_unavailable") << status;
    EXPECT_NE(sink->error_message().find(std::to_string(status)), std::string::npos) << sink->error_message();
    EXPECT_EQ(server.requests().size(), 3u) << status;
  }
}

TEST_P(HttpStreamingProviderTest, ServerError503OnceThenSuccess) {
  FakeServer server([&](const ReceivedRequest&, std::size_t index) {
    if (index == 0) return Script{write(response(503, "text/plain", "busy")), close()};
    return happy_reply();
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->text(), "Hello world");
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST_P(HttpStreamingProviderTest, ServerThatNeverAnswersTimesOut) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return Script{hang()}; });
  auto options = ClientLoop::fast_options();
  options.read_timeout = 300ms;
  auto sink = run(*provider(server, options));
  EXPECT_EQ(sink->error_code(), "provider_timeout");
  // The message names the timeout that fired: the configured one.
  EXPECT_NE(sink->error_message().find("did not answer within 300ms"), std::string::npos) << sink->error_message();
  EXPECT_EQ(server.requests().size(), 1u);  // read timeouts are not retried
  EXPECT_TRUE(server.wait_client_closes(1, 10s));
}

TEST_P(HttpStreamingProviderTest, StallMidStreamTimesOut) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(wire().opening() + wire().text("so far"))), hang()};
  });
  auto options = ClientLoop::fast_options();
  options.read_timeout = 300ms;
  auto sink = run(*provider(server, options));
  EXPECT_EQ(sink->text(), "so far");
  EXPECT_EQ(sink->error_code(), "provider_timeout");
  EXPECT_NE(sink->error_message().find("stopped sending for 300ms"), std::string::npos) << sink->error_message();
}

TEST_P(HttpStreamingProviderTest, AStreamOfKeepAlivesOnlyTimesOut) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    Script script{write(sse_head()), write(chunk(wire().opening() + wire().text("so far")))};
    for (int i = 0; i < 60; ++i) {
      script.push_back(sleep(50ms));
      script.push_back(write(chunk(": keep-alive\n\n")));
    }
    script.push_back(hang());
    return script;
  });
  auto options = ClientLoop::fast_options();
  options.read_timeout = 500ms;
  auto sink = run(*provider(server, options));
  EXPECT_EQ(sink->text(), "so far");
  EXPECT_EQ(sink->error_code(), "provider_timeout");
  EXPECT_NE(sink->error_message().find("sent only keep-alives for 500ms"), std::string::npos) << sink->error_message();
}

TEST_P(HttpStreamingProviderTest, ABodyKeptOpenAfterTheEndIsClosedSoon) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()),
                  write(chunk(wire().opening() + wire().text("done") + wire().finish(Ending::stop, 1) + wire().end())),
                  hang()};
  });
  auto sink = run(*provider(server, patient_options()));
  EXPECT_EQ(sink->text(), "done");
  ASSERT_TRUE(sink->finish());
  EXPECT_TRUE(server.wait_client_closes(1, 10s)) << "held for the read timeout (60 s) after the reply";
}

TEST_P(HttpStreamingProviderTest, ConnectionRefusedIsUnavailableAfterRetries) {
  std::unique_ptr<HttpStreamingProvider> p;
  {
    FakeServer gone([](const ReceivedRequest&, std::size_t) { return Script{}; });
    auto s = settings(wire(), gone);
    s.retry.backoff_base = 5ms;
    p = std::make_unique<HttpStreamingProvider>(loop.client(), wire().protocol(), s);
  }  // the port is closed now
  auto sink = run(*p);
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("cannot connect"), std::string::npos);
}

TEST_P(HttpStreamingProviderTest, MissingKeyIsNotConfigured) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return happy_reply(); });
  auto s = settings(wire(), server);
  s.api_key.clear();
  HttpStreamingProvider p(loop.client(), wire().protocol(), s);
  auto sink = run(p);
  EXPECT_EQ(sink->error_code(), "provider_not_configured");
  EXPECT_EQ(sink->error_message(), std::string(wire().protocol()->names().key_setting) + " is not set");
  EXPECT_TRUE(server.requests().empty());
}

TEST_P(HttpStreamingProviderTest, JsonInsteadOfAnEventStreamIsBadResponse) {
  FakeServer server([](const ReceivedRequest&, std::size_t) {
    return Script{write(response(200, "application/json", R"({"choices":[{"message":{"content":"hi"}}]})"))};
  });
  auto sink = run(*provider(server));
  EXPECT_EQ(sink->error_code(), "provider_bad_response");
}

TEST_P(HttpStreamingProviderTest, CancelMidStreamFinishesAndClosesTheConnection) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    return Script{write(sse_head()), write(chunk(wire().opening() + wire().text("first"))), hang()};
  });
  auto p = provider(server, patient_options());
  auto sink = std::make_shared<RecordingSink>();
  auto g = p->start(chat_request(), wire().model(), sink);
  ASSERT_TRUE(sink->wait_text());
  g->cancel();
  g->cancel();  // twice is harmless
  // The server never ends the stream and the read timeout is a minute away:
  // only the cancel can end the reply within the wait.
  ASSERT_TRUE(sink->wait(10s));
  ASSERT_TRUE(sink->finish());
  EXPECT_EQ(sink->finish()->finish_reason, "cancelled");
  EXPECT_EQ(sink->finish()->model, wire().reply_model());
  EXPECT_EQ(sink->text(), "first");
  EXPECT_EQ(sink->finals(), 1);
  EXPECT_TRUE(server.wait_client_closes(1, 10s));  // the provider's side sees the connection go
  EXPECT_EQ(sink->calls_after_final(), 0);
}

TEST_P(HttpStreamingProviderTest, CancelWhileWaitingForTheAnswerClosesTheConnection) {
  FakeServer server([](const ReceivedRequest&, std::size_t) { return Script{hang()}; });
  auto p = provider(server, patient_options());
  auto sink = std::make_shared<RecordingSink>();
  auto g = p->start(chat_request(), wire().model(), sink);
  ASSERT_TRUE(server.wait_requests(1, 10s));
  g->cancel();
  ASSERT_TRUE(sink->wait(10s));
  EXPECT_EQ(sink->finish()->finish_reason, "cancelled");
  EXPECT_TRUE(server.wait_client_closes(1, 10s));
}

TEST_P(HttpStreamingProviderTest, CancelRightAfterStartSendsNoRequest) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return happy_reply(); });
  ClientLoop paused(0);  // start and cancel are both queued before either runs
  auto client = paused.client();
  HttpStreamingProvider p(client, wire().protocol(), settings(wire(), server));
  auto sink = std::make_shared<RecordingSink>();
  auto g = p.start(chat_request(), wire().model(), sink);
  g->cancel();
  std::weak_ptr<Generation> running = g;
  g.reset();
  paused.add_threads(1);
  ASSERT_TRUE(sink->wait(10s));
  EXPECT_EQ(sink->finish()->finish_reason, "cancelled");
  EXPECT_TRUE(sink->pieces().empty());
  // Once the generation is gone it can send nothing more.
  ASSERT_TRUE(eventually([&] { return running.expired(); }));
  EXPECT_EQ(client->stats().connections_opened, 0u);
  EXPECT_TRUE(server.requests().empty());
}

TEST_P(HttpStreamingProviderTest, KeepAliveConnectionIsReused) {
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return happy_reply(); });
  auto client = loop.client();
  HttpStreamingProvider p(client, wire().protocol(), settings(wire(), server));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run(p)->text(), "Hello world");
    // The reply can end (at its end event) a moment before the body's last
    // chunk frees the connection.
    EXPECT_TRUE(eventually([&] { return client->pool().idle() == 1; }));
  }
  EXPECT_EQ(server.requests().size(), 3u);
  EXPECT_EQ(server.connections(), 1u);
  EXPECT_EQ(client->stats().connections_reused, 2u);
}

TEST_P(HttpStreamingProviderTest, StalePooledConnectionIsReplacedTransparently) {
  // The server closes each connection after its reply, without saying so.
  FakeServer server([&](const ReceivedRequest&, std::size_t) {
    auto s = happy_reply();
    s.push_back(sleep(20ms));
    s.push_back(close());
    return s;
  });
  auto p = provider(server);
  EXPECT_EQ(run(*p)->text(), "Hello world");
  ASSERT_TRUE(server.wait_server_closes(1, 10s));
  EXPECT_EQ(run(*p)->text(), "Hello world");
  EXPECT_EQ(server.connections(), 2u);
}

TEST_P(HttpStreamingProviderTest, UntrustedCertificateIsUnavailableWithoutRetrying) {
  auto cert = make_certificate("DNS:localhost");
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return happy_reply(); }, server_tls(cert));
  auto sink = run(*provider(server));  // system CAs only
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("TLS handshake"), std::string::npos) << sink->error_message();
  EXPECT_NE(sink->error_message().find("certificate verify failed"), std::string::npos) << sink->error_message();
  EXPECT_TRUE(server.requests().empty());
  EXPECT_EQ(server.connections(), 1u);
}

TEST_P(HttpStreamingProviderTest, ProxyRefusingTheTunnelIsUnavailableWithoutRetrying) {
  auto cert = make_certificate("DNS:localhost");
  FakeServer server([&](const ReceivedRequest&, std::size_t) { return happy_reply(); }, server_tls(cert));
  FakeConnectProxy proxy(407);
  auto options = ClientLoop::fast_options();
  options.extra_ca_pem = cert.cert_pem;
  options.https_proxy = http_client::parse_http_url("http://127.0.0.1:" + std::to_string(proxy.port()));
  auto sink = run(*provider(server, options));
  EXPECT_EQ(sink->error_code(), "provider_unavailable");
  EXPECT_NE(sink->error_message().find("proxy"), std::string::npos) << sink->error_message();
  EXPECT_EQ(proxy.connects().size(), 1u);
  EXPECT_EQ(server.connections(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Protocols, HttpStreamingProviderTest, ::testing::Values(&openai_wire(), &anthropic_wire()),
                         [](const ::testing::TestParamInfo<const WireScript*>& info) { return info.param->name(); });

}  // namespace
}  // namespace chat::providers::test
