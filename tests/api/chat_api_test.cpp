#include "api/chat_api.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <filesystem>
#include <thread>

#include "auth/authenticator.hpp"
#include "bus/bus_work_queue.hpp"
#include "bus/memory_bus.hpp"
#include "common/identifier.hpp"
#include "http/listener.hpp"
#include "registry/memory_registry.hpp"
#include "store/database_held.hpp"
#include "store/sqlite_store.hpp"

namespace chat::api {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using asio::ip::tcp;

// AUTH_MODE=jwt without the cryptography (tests/auth has that): "tok-<user>" is
// a valid token for <user>, anything else a bad one.
struct FakeAuthenticator final : auth::Authenticator {
  auth::Verdict verify(std::string_view token) const override {
    if (token.empty()) return {auth::Errc::missing_token, {}};
    if (!token.starts_with("tok-")) return {auth::Errc::bad_signature, {}};
    return {{}, std::string(token.substr(4))};
  }
};

// The API behind a real listener on loopback, with the embedded pod behind it
// (no worker: these tests are about HTTP, not replies).
struct ChatApiTest : ::testing::Test {
  std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("api-test-" + std::to_string(::getpid()) + "-" +
                                                       std::to_string(std::rand()));
    std::filesystem::create_directories(d);
    return d;
  }();
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(ioc);
  bus::MemoryBus bus{ioc.get_executor()};
  bus::BusWorkQueue queue{bus};
  registry::MemoryRegistry registry{ioc.get_executor()};
  store::SqliteStore store{[this] {
    config::StoreConfig c;
    c.path = (dir / "chat.db").string();
    return c;
  }()};
  pod::Pod pod{ioc, [] {
                 pod::PodOptions o;
                 o.pod_id = "pod-api";
                 o.cancel_timeout = std::chrono::milliseconds{200};
                 return o;
               }(),
               bus, queue, nullptr, registry, store};
  ChatApi api{ApiOptions{"https://app.example, https://other.example", {100}}, pod, store};
  std::shared_ptr<http::Listener> listener = std::make_shared<http::Listener>(
      ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0), api, http::SessionLimits{}, [] { return false; });
  // The same pod and store behind an API in jwt mode.
  FakeAuthenticator authenticator;
  ChatApi jwt_api{[this] {
                    ApiOptions o{"*", {100}};
                    o.authenticator = &authenticator;
                    return o;
                  }(),
                  pod, store};
  std::shared_ptr<http::Listener> jwt_listener = std::make_shared<http::Listener>(
      ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0), jwt_api, http::SessionLimits{}, [] { return false; });
  bool use_jwt = false;  // call() goes to jwt_listener
  std::thread thread;

  void SetUp() override {
    pod.start();
    listener->run();
    jwt_listener->run();
    thread = std::thread([this] { ioc.run(); });
  }
  void TearDown() override {
    listener->stop();
    jwt_listener->stop();
    work.reset();
    ioc.stop();
    thread.join();
    std::filesystem::remove_all(dir);
  }

  bhttp::response<bhttp::string_body> call(bhttp::verb method, std::string target, std::string body = {},
                                           std::vector<std::pair<std::string, std::string>> headers = {}) {
    asio::io_context client_ioc;
    tcp::socket socket(client_ioc);
    socket.connect(tcp::endpoint(asio::ip::address_v4::loopback(), (use_jwt ? jwt_listener : listener)->port()));
    bhttp::request<bhttp::string_body> req{method, target, 11};
    req.set(bhttp::field::host, "localhost");
    if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = std::move(body);
    req.prepare_payload();
    bhttp::write(socket, req);
    boost::beast::flat_buffer buffer;
    bhttp::response<bhttp::string_body> res;
    bhttp::read(socket, buffer, res);
    return res;
  }

  static std::string error_code(const bhttp::response<bhttp::string_body>& res) {
    return std::string(json::parse(res.body()).at("error").at("code").as_string());
  }
};

TEST_F(ChatApiTest, UnknownPathsAre404WithAJsonError) {
  auto res = call(bhttp::verb::get, "/nope");
  EXPECT_EQ(res.result_int(), 404);
  EXPECT_EQ(error_code(res), "not_found");
  EXPECT_EQ(res[bhttp::field::content_type], "application/json");
}

TEST_F(ChatApiTest, AWrongMethodIs405WithTheAllowedOnes) {
  auto res = call(bhttp::verb::get, "/api/chat");
  EXPECT_EQ(res.result_int(), 405);
  EXPECT_EQ(res[bhttp::field::allow], "POST, OPTIONS");
  // HEAD is answered wherever GET is, so it is listed there; not on the event stream.
  EXPECT_EQ(call(bhttp::verb::post, "/health")[bhttp::field::allow], "GET, HEAD, OPTIONS");
  EXPECT_EQ(call(bhttp::verb::delete_, "/api/sessions")[bhttp::field::allow], "GET, HEAD, POST, OPTIONS");
  EXPECT_EQ(call(bhttp::verb::post, "/api/sse")[bhttp::field::allow], "GET, OPTIONS");
}

TEST_F(ChatApiTest, BadIdentifiersInAPathAre400) {
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/a.b/messages?user_id=u").result_int(), 400);
  EXPECT_EQ(call(bhttp::verb::delete_, "/api/sessions/a.b?user_id=u").result_int(), 400);
  auto res = call(bhttp::verb::post, "/api/chat/a.b/cancel?user_id=u");
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_EQ(error_code(res), "invalid_request");
}

TEST_F(ChatApiTest, AChatMustBeJson) {
  auto res = call(bhttp::verb::post, "/api/chat", "x", {{"Content-Type", "text/plain"}});
  EXPECT_EQ(res.result_int(), 415);
}

TEST_F(ChatApiTest, AnInvalidChatSaysWhatIsWrong) {
  auto res = call(bhttp::verb::post, "/api/chat", R"({"session_id":"s","user_id":"u","message":")" + std::string(101, 'x') + "\"}");
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_NE(res.body().find("longer than 100"), std::string::npos);
}

TEST_F(ChatApiTest, AnAcceptedChatIs202WithItsIds) {
  auto res = call(bhttp::verb::post, "/api/chat", R"({"session_id":"s1","user_id":"u1","message":"hi"})",
                  {{"X-Correlation-ID", "corr_abc"}});
  ASSERT_EQ(res.result_int(), 202) << res.body();
  auto body = json::parse(res.body());
  EXPECT_EQ(body.at("status").as_string(), "accepted");
  EXPECT_EQ(body.at("correlation_id").as_string(), "corr_abc");
  EXPECT_EQ(res["X-Correlation-ID"], "corr_abc");
  EXPECT_EQ(std::string(body.at("message_id").as_string()).rfind("msg_", 0), 0u);
}

TEST_F(ChatApiTest, AnotherUsersSessionIsAnswered404LikeAMissingOne) {
  ASSERT_EQ(call(bhttp::verb::post, "/api/chat", R"({"session_id":"s2","user_id":"owner","message":"hi"})").result_int(), 202);
  // Posting cannot hide that the id is taken: it would otherwise create it.
  EXPECT_EQ(call(bhttp::verb::post, "/api/chat", R"({"session_id":"s2","user_id":"other","message":"hi"})").result_int(), 403);
  for (const char* id : {"s2", "never-created"}) {
    auto sid = std::string(id);
    auto res = call(bhttp::verb::get, "/api/sessions/" + sid + "/messages?user_id=other");
    EXPECT_EQ(res.result_int(), 404) << sid;
    EXPECT_EQ(res.body(), R"({"error":{"code":"not_found","message":"session not found"}})");
    EXPECT_EQ(call(bhttp::verb::delete_, "/api/sessions/" + sid + "?user_id=other").result_int(), 404) << sid;
  }
  EXPECT_EQ(call(bhttp::verb::get, "/api/sse?session_id=s2&user_id=other").result_int(), 404);
}

// "messages" is a valid session id: its routes are split at the first slash.
TEST_F(ChatApiTest, ASessionNamedMessagesCanBeReadAndDeleted) {
  ASSERT_EQ(call(bhttp::verb::post, "/api/chat", R"({"session_id":"messages","user_id":"u","message":"hi"})").result_int(),
            202);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/messages/messages?user_id=u").result_int(), 200);
  EXPECT_EQ(call(bhttp::verb::delete_, "/api/sessions/messages?user_id=u").result_int(), 200);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/messages/messages?user_id=u").result_int(), 404);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/messages/other?user_id=u").result_int(), 404);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/a/messages/b?user_id=u").result_int(), 404);
}

// The status line and headers of an event stream, whose body never ends.
struct OpenStream {
  asio::io_context ioc;
  tcp::socket socket{ioc};
  boost::beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::empty_body> parser;

  OpenStream(unsigned short port, const std::string& target, const std::string& cookie = {}) {
    socket.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port));
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, "localhost");
    if (!cookie.empty()) req.set(bhttp::field::cookie, cookie);
    bhttp::write(socket, req);
    bhttp::read_header(socket, buffer, parser);
  }
  unsigned status() const { return parser.get().result_int(); }
};

TEST_F(ChatApiTest, AStreamOnANewSessionClaimsItForItsUser) {
  // B watches a session that does not exist yet; A then cannot create it and
  // have A's reply stream to B.
  OpenStream stream(listener->port(), "/api/sse?session_id=s-new&user_id=bob");
  ASSERT_EQ(stream.status(), 200u);
  auto res = call(bhttp::verb::post, "/api/chat", R"({"session_id":"s-new","user_id":"alice","message":"hi"})");
  EXPECT_EQ(res.result_int(), 403);
  EXPECT_EQ(call(bhttp::verb::post, "/api/chat", R"({"session_id":"s-new","user_id":"bob","message":"hi"})").result_int(), 202);
}

TEST_F(ChatApiTest, PostSessionsMakesAnUnguessableIdOwnedByTheCaller) {
  auto res = call(bhttp::verb::post, "/api/sessions", R"({"user_id":"u1"})");
  ASSERT_EQ(res.result_int(), 201) << res.body();
  auto id = std::string(json::parse(res.body()).at("session_id").as_string());
  EXPECT_EQ(id.size(), 23u);  // a stream keeps up to 23 characters inline
  EXPECT_EQ(id.rfind("s_", 0), 0u);
  EXPECT_TRUE(is_valid_identifier(id)) << id;
  EXPECT_NE(id, std::string(json::parse(call(bhttp::verb::post, "/api/sessions?user_id=u1").body()).at("session_id").as_string()));
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/" + id + "/messages?user_id=u1").result_int(), 200);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/" + id + "/messages?user_id=u2").result_int(), 404);
  EXPECT_EQ(call(bhttp::verb::post, "/api/sessions", "").result_int(), 400);  // nobody named
  EXPECT_EQ(call(bhttp::verb::put, "/api/sessions").result_int(), 405);
}

TEST_F(ChatApiTest, JwtModeNeedsABearerTokenOnEveryApiRoute) {
  use_jwt = true;
  const std::vector<std::pair<bhttp::verb, std::string>> routes = {
      {bhttp::verb::post, "/api/chat"},           {bhttp::verb::post, "/api/chat/m1/cancel"},
      {bhttp::verb::get, "/api/sse?session_id=s"}, {bhttp::verb::get, "/api/sessions"},
      {bhttp::verb::post, "/api/sessions"},       {bhttp::verb::get, "/api/sessions/s/messages"},
      {bhttp::verb::delete_, "/api/sessions/s"}};
  for (const auto& [method, target] : routes) {
    auto none = call(method, target);
    EXPECT_EQ(none.result_int(), 401) << target;
    EXPECT_EQ(none[bhttp::field::www_authenticate], "Bearer") << target;
    EXPECT_EQ(error_code(none), "unauthorized") << target;
    auto bad = call(method, target, {}, {{"Authorization", "Bearer forged"}});
    EXPECT_EQ(bad.result_int(), 401) << target;
    EXPECT_EQ(bad[bhttp::field::www_authenticate], R"(Bearer error="invalid_token")") << target;
    EXPECT_EQ(call(method, target, {}, {{"Authorization", "Basic dTpw"}}).result_int(), 401) << target;
  }
  // Health, readiness and the description stay open, and say the mode.
  auto health = call(bhttp::verb::get, "/health");
  EXPECT_EQ(health.result_int(), 200);
  EXPECT_EQ(json::parse(health.body()).at("auth_mode").as_string(), "jwt");
  EXPECT_EQ(json::parse(call(bhttp::verb::get, "/api").body()).at("auth_mode").as_string(), "jwt");
  use_jwt = false;
  EXPECT_EQ(json::parse(call(bhttp::verb::get, "/health").body()).at("auth_mode").as_string(), "none");
  EXPECT_EQ(json::parse(call(bhttp::verb::get, "/api").body()).at("auth_mode").as_string(), "none");
}

TEST_F(ChatApiTest, ServiceInfoTellsClientsHowLargeAMessageMayBe) {
  auto limits = json::parse(call(bhttp::verb::get, "/api").body()).at("limits").as_object();
  EXPECT_EQ(limits.at("max_message_chars").to_number<std::uint64_t>(), 100u);
  EXPECT_EQ(limits.at("max_body_bytes").to_number<std::uint64_t>(), ApiOptions{}.max_body_bytes);
}

TEST_F(ChatApiTest, JwtModeTakesTheUserFromTheToken) {
  use_jwt = true;
  const std::pair<std::string, std::string> alice{"Authorization", "Bearer tok-alice"};
  auto res = call(bhttp::verb::post, "/api/chat", R"({"session_id":"js1","message":"hi"})", {alice});
  ASSERT_EQ(res.result_int(), 202) << res.body();
  EXPECT_EQ(call(bhttp::verb::post, "/api/chat", R"({"session_id":"js1","user_id":"alice","message":"hi"})", {alice})
                .result_int(), 202);
  auto other = call(bhttp::verb::post, "/api/chat", R"({"session_id":"js1","user_id":"bob","message":"hi"})", {alice});
  EXPECT_EQ(other.result_int(), 403);
  EXPECT_EQ(error_code(other), "forbidden");
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/js1/messages", {}, {alice}).result_int(), 200);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/js1/messages?user_id=bob", {}, {alice}).result_int(), 403);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/js1/messages", {}, {{"Authorization", "Bearer tok-bob"}}).result_int(),
            404);
  auto list = json::parse(call(bhttp::verb::get, "/api/sessions", {}, {alice}).body());
  EXPECT_EQ(list.at("sessions").as_array().size(), 1u);
  // The stream takes its token from the query or a cookie as well.
  EXPECT_EQ(OpenStream(jwt_listener->port(), "/api/sse?session_id=js1&access_token=tok-alice").status(), 200u);
  EXPECT_EQ(OpenStream(jwt_listener->port(), "/api/sse?session_id=js1&access_token=tok-bob").status(), 404u);
  EXPECT_EQ(OpenStream(jwt_listener->port(), "/api/sse?session_id=js1&access_token=forged").status(), 401u);
  EXPECT_EQ(OpenStream(jwt_listener->port(), "/api/sse?session_id=js1", "theme=dark; chat_token=tok-alice").status(), 200u);
  // ...but other routes do not: a token in a URL ends up in too many logs.
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions?access_token=tok-alice").result_int(), 401);
}

TEST_F(ChatApiTest, CancellingAReplyNoWorkerRunsIs404) {
  auto res = call(bhttp::verb::post, "/api/chat/msg_1/cancel?user_id=u1");
  EXPECT_EQ(res.result_int(), 404);
  EXPECT_EQ(error_code(res), "not_found");
}

TEST_F(ChatApiTest, ConfiguredOriginsAreEchoedAndOthersGetNoAllowHeader) {
  auto allowed = call(bhttp::verb::get, "/health", {}, {{"Origin", "https://app.example"}});
  EXPECT_EQ(allowed[bhttp::field::access_control_allow_origin], "https://app.example");
  EXPECT_EQ(allowed[bhttp::field::vary], "Origin");
  // Not on the CORS safelist: the page's script could not read a 429's wait.
  EXPECT_EQ(allowed[bhttp::field::access_control_expose_headers], "Retry-After, X-Correlation-ID");
  auto other = call(bhttp::verb::get, "/health", {}, {{"Origin", "https://evil.example"}});
  EXPECT_EQ(other.count(bhttp::field::access_control_allow_origin), 0u);
  EXPECT_EQ(other.count(bhttp::field::access_control_expose_headers), 0u);
  EXPECT_EQ(other[bhttp::field::vary], "Origin");
  EXPECT_EQ(call(bhttp::verb::get, "/health")[bhttp::field::vary], "Origin");
  auto preflight = call(bhttp::verb::options, "/api/chat", {}, {{"Origin", "https://other.example"}});
  EXPECT_EQ(preflight.result_int(), 204);
  EXPECT_EQ(preflight[bhttp::field::access_control_allow_origin], "https://other.example");
  EXPECT_NE(preflight[bhttp::field::access_control_allow_headers].find("Last-Event-ID"), std::string::npos);
}

TEST_F(ChatApiTest, HealthAndReadyReportThePod) {
  auto health = call(bhttp::verb::get, "/health");
  EXPECT_EQ(health.result_int(), 200);
  auto body = json::parse(health.body());
  EXPECT_EQ(body.at("status").as_string(), "healthy");
  EXPECT_EQ(body.at("pod_id").as_string(), "pod-api");
  EXPECT_EQ(call(bhttp::verb::get, "/ready").result_int(), 200);
}

TEST_F(ChatApiTest, AStreamWithoutAUserIs400) {
  auto res = call(bhttp::verb::get, "/api/sse?session_id=s1");
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_NE(res.body().find("user_id is required"), std::string::npos);
}

// At shutdown the store answers its last calls while the program destroys the
// API: an answer after the API went is dropped, not handed on through what is
// gone (its metrics, its pod), and the client's connection just ends.
TEST_F(ChatApiTest, AStoreAnswerAfterTheApiWentIsDropped) {
  auto doomed = std::make_unique<ChatApi>(ApiOptions{"*", {100}}, pod, store);
  auto doomed_listener = std::make_shared<http::Listener>(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0),
                                                          *doomed, http::SessionLimits{}, [] { return false; });
  doomed_listener->run();
  store::DatabaseHeld held(dir / "chat.db");
  // The store's thread waits in this write; the API's call queues behind it.
  store.claim_session("s-blocker", "u1", [](boost::system::error_code) {});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{4};
  auto wait_until_queued = [&](std::size_t n) {
    while (store.status().queued != n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    return store.status().queued;
  };
  // Until the store's thread has taken the blocker, "one queued" would be the
  // blocker itself, not the API's call.
  ASSERT_EQ(wait_until_queued(0), 0u) << "the store's thread is in the blocker";
  asio::io_context client_ioc;
  tcp::socket client(client_ioc);
  client.connect(tcp::endpoint(asio::ip::address_v4::loopback(), doomed_listener->port()));
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/api/sessions?user_id=u1", 11};
  req.set(bhttp::field::host, "localhost");
  req.prepare_payload();
  bhttp::write(client, req);
  ASSERT_EQ(wait_until_queued(1), 1u) << "the API's call waits at the store";
  asio::post(ioc, [l = doomed_listener] { l->stop(); });
  doomed_listener.reset();
  doomed.reset();
  held.let_go();
  boost::beast::flat_buffer buffer;
  bhttp::response<bhttp::string_body> res;
  boost::system::error_code ec;
  bhttp::read(client, buffer, res, ec);
  EXPECT_TRUE(ec) << "answered " << res.result_int() << " by an API that is gone";
}

}  // namespace
}  // namespace chat::api
