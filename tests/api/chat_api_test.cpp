#include "api/chat_api.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <filesystem>
#include <thread>

#include "bus/bus_work_queue.hpp"
#include "bus/memory_bus.hpp"
#include "http/listener.hpp"
#include "registry/memory_registry.hpp"
#include "store/sqlite_store.hpp"

namespace chat::api {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using asio::ip::tcp;

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
  std::thread thread;

  void SetUp() override {
    pod.start();
    listener->run();
    thread = std::thread([this] { ioc.run(); });
  }
  void TearDown() override {
    listener->stop();
    work.reset();
    ioc.stop();
    thread.join();
    std::filesystem::remove_all(dir);
  }

  bhttp::response<bhttp::string_body> call(bhttp::verb method, std::string target, std::string body = {},
                                           std::vector<std::pair<std::string, std::string>> headers = {}) {
    asio::io_context client_ioc;
    tcp::socket socket(client_ioc);
    socket.connect(tcp::endpoint(asio::ip::address_v4::loopback(), listener->port()));
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

TEST_F(ChatApiTest, AnotherUsersSessionIs403OnEveryRoute) {
  ASSERT_EQ(call(bhttp::verb::post, "/api/chat", R"({"session_id":"s2","user_id":"owner","message":"hi"})").result_int(), 202);
  EXPECT_EQ(call(bhttp::verb::post, "/api/chat", R"({"session_id":"s2","user_id":"other","message":"hi"})").result_int(), 403);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sessions/s2/messages?user_id=other").result_int(), 403);
  EXPECT_EQ(call(bhttp::verb::delete_, "/api/sessions/s2?user_id=other").result_int(), 403);
  EXPECT_EQ(call(bhttp::verb::get, "/api/sse?session_id=s2&user_id=other").result_int(), 403);
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
  auto other = call(bhttp::verb::get, "/health", {}, {{"Origin", "https://evil.example"}});
  EXPECT_EQ(other.count(bhttp::field::access_control_allow_origin), 0u);
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

}  // namespace
}  // namespace chat::api
