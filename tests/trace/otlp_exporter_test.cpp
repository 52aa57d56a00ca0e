#include "trace/otlp_exporter.hpp"

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <mutex>
#include <thread>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace json = boost::json;

namespace chat::trace {
namespace {

// A collector on a free port that keeps each request and answers `status`.
class Collector {
 public:
  explicit Collector(unsigned status) : status_(status), acceptor_(ioc_, {asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { serve(); });
  }
  ~Collector() {
    stopping_ = true;
    // Wakes the blocking accept.
    asio::io_context ioc;
    asio::ip::tcp::socket s(ioc);
    boost::system::error_code ec;
    s.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/v1/traces"; }
  std::vector<bhttp::request<bhttp::string_body>> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    while (!stopping_) {
      asio::ip::tcp::socket socket(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec || stopping_) return;
      beast::flat_buffer buffer;
      for (;;) {
        bhttp::request<bhttp::string_body> req;
        bhttp::read(socket, buffer, req, ec);
        if (ec) break;
        {
          std::lock_guard lock(mutex_);
          requests_.push_back(req);
        }
        bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status_), 11};
        res.body() = "{}";
        res.prepare_payload();
        bhttp::write(socket, res, ec);
        if (ec) break;
      }
    }
  }

  unsigned status_;
  asio::io_context ioc_;
  asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<bhttp::request<bhttp::string_body>> requests_;
  std::thread thread_;
};

SpanData span_named(std::string name, bool with_parent) {
  SpanData s;
  s.context.trace_id = new_trace_id();
  s.context.span_id = new_span_id();
  s.context.sampled = true;
  s.context.tracestate = "vendor=1";
  if (with_parent) s.parent = new_span_id();
  s.name = std::move(name);
  s.kind = SpanKind::producer;
  s.start_unix_nanos = 1'700'000'000'000'000'000ull;
  s.end_unix_nanos = 1'700'000'000'500'000'000ull;
  s.attributes = {{"chat.message_id", std::string("msg_1")}, {"http.response.status_code", std::int64_t{202}},
                  {"retried", true}};
  s.failed = true;
  s.status_message = "bus down";
  return s;
}

ExporterOptions options_for(std::string url) {
  ExporterOptions o;
  o.url = std::move(url);
  o.headers = {{"Authorization", "Bearer t0ken"}};
  o.resource.attributes = {{"service.name", "chatd"}, {"service.instance.id", "pod-1"}};
  o.schedule_delay = std::chrono::milliseconds{3'600'000};  // only a full batch or the destructor exports
  o.timeout = std::chrono::milliseconds{5'000};
  return o;
}

const json::value& attribute(const json::array& attributes, std::string_view key) {
  for (const auto& a : attributes)
    if (a.at("key").as_string() == key) return a.at("value");
  throw std::runtime_error("no attribute " + std::string(key));
}

TEST(OtlpExporter, SendsABatchAsOtlpJsonWithTheConfiguredHeaders) {
  Collector collector(200);
  auto first = span_named("chat.publish_request", true);
  auto second = span_named("POST /api/chat", false);
  {
    auto o = options_for(collector.url());
    o.max_batch = 2;
    OtlpExporter exporter(o);
    exporter.add(first);
    exporter.add(second);
  }  // the destructor waits for the export
  auto requests = collector.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& req = requests[0];
  EXPECT_EQ(req.method(), bhttp::verb::post);
  EXPECT_EQ(req.target(), "/v1/traces");
  EXPECT_EQ(req[bhttp::field::content_type], "application/json");
  EXPECT_EQ(req[bhttp::field::authorization], "Bearer t0ken");

  auto body = json::parse(req.body());
  const auto& rs = body.at("resourceSpans").as_array().at(0);
  const auto& resource = rs.at("resource").at("attributes").as_array();
  EXPECT_EQ(attribute(resource, "service.name").at("stringValue"), "chatd");
  EXPECT_EQ(attribute(resource, "service.instance.id").at("stringValue"), "pod-1");
  const auto& spans = rs.at("scopeSpans").as_array().at(0).at("spans").as_array();
  ASSERT_EQ(spans.size(), 2u);
  const auto& s = spans[0];
  EXPECT_EQ(s.at("traceId"), json::value(to_hex(first.context.trace_id)));
  EXPECT_EQ(s.at("spanId"), json::value(to_hex(first.context.span_id)));
  EXPECT_EQ(s.at("parentSpanId"), json::value(to_hex(first.parent)));
  EXPECT_EQ(s.at("traceState"), "vendor=1");
  EXPECT_EQ(s.at("name"), "chat.publish_request");
  EXPECT_EQ(s.at("kind"), 4);  // SPAN_KIND_PRODUCER
  EXPECT_EQ(s.at("startTimeUnixNano"), "1700000000000000000");  // 64-bit integers as strings
  EXPECT_EQ(s.at("endTimeUnixNano"), "1700000000500000000");
  EXPECT_EQ(s.at("status").at("code"), 2);  // STATUS_CODE_ERROR
  EXPECT_EQ(s.at("status").at("message"), "bus down");
  const auto& attrs = s.at("attributes").as_array();
  EXPECT_EQ(attribute(attrs, "chat.message_id").at("stringValue"), "msg_1");
  EXPECT_EQ(attribute(attrs, "http.response.status_code").at("intValue"), "202");
  EXPECT_EQ(attribute(attrs, "retried").at("boolValue"), true);
  EXPECT_FALSE(spans[1].as_object().contains("parentSpanId"));  // a root span
}

unsigned short closed_port() {
  asio::io_context ioc;
  asio::ip::tcp::acceptor a(ioc, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// One batch of 4 spans, exported at once to `url`, which does not take it:
// the batch is counted as dropped, nothing as exported.
void expect_the_batch_dropped(OtlpExporter& exporter) {
  for (int i = 0; i < 4; ++i) exporter.add(span_named("s", false));
  for (int i = 0; i < 1'000 && exporter.stats().export_failures.value() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  EXPECT_EQ(exporter.stats().export_failures.value(), 1u);
  EXPECT_EQ(exporter.stats().dropped_export_failed.value(), 4u);
  EXPECT_EQ(exporter.stats().exported.value(), 0u);
}

ExporterOptions batches_of_four(std::string url) {
  auto o = options_for(std::move(url));
  o.max_batch = 4;
  // Only a full batch wakes the export thread: a slow test thread adding
  // the four spans must not see them leave in two batches.
  o.schedule_delay = std::chrono::hours{1};
  return o;
}

TEST(OtlpExporter, TheEndpointIsShownWithoutCredentials) {
  auto o = options_for("https://tracer:s3cret@collector.example:4318/v1/traces");
  o.max_batch = 100;  // nothing is sent
  OtlpExporter exporter(o);
  EXPECT_EQ(exporter.endpoint(), "https://collector.example:4318/v1/traces");
  EXPECT_EQ(OtlpExporter(options_for("http://127.0.0.1:4318/v1/traces")).endpoint(), "http://127.0.0.1:4318/v1/traces");
}

TEST(OtlpExporter, PastItsQueueLimitSpansAreDroppedAndCounted) {
  auto o = options_for("http://127.0.0.1:" + std::to_string(closed_port()) + "/v1/traces");
  o.max_queue = 3;
  o.max_batch = 100;  // nothing wakes the export thread before the destructor
  OtlpExporter exporter(o);
  for (int i = 0; i < 10; ++i) exporter.add(span_named("s", false));
  EXPECT_EQ(exporter.stats().dropped_queue_full.value(), 7u);
}

TEST(OtlpExporter, ACollectorThatIsDownCostsSpansNotChats) {
  OtlpExporter exporter(batches_of_four("http://127.0.0.1:" + std::to_string(closed_port()) + "/v1/traces"));
  expect_the_batch_dropped(exporter);
}

TEST(OtlpExporter, FailedExportsAreCountedAsDroppedSpans) {
  Collector refusing(503);
  OtlpExporter exporter(batches_of_four(refusing.url()));
  expect_the_batch_dropped(exporter);
  EXPECT_EQ(refusing.requests().size(), 1u);
  metrics::Exposition out;
  exporter.collect(out);
  auto text = out.text();
  EXPECT_NE(text.find("chat_trace_spans_dropped_total{reason=\"export_failed\"} 4"), std::string::npos) << text;
  EXPECT_NE(text.find("chat_trace_export_failures_total 1"), std::string::npos) << text;
}

}  // namespace
}  // namespace chat::trace
