#include "trace/tracer.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace chat::trace {
namespace {

struct Collected final : SpanSink {
  void add(SpanData span) override { spans.push_back(std::move(span)); }
  std::vector<SpanData> spans;
};

SpanContext parent(bool sampled) {
  return *parse_traceparent(std::string("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-") +
                                (sampled ? "01" : "00"),
                            "vendor=1");
}

TEST(Tracer, AChildJoinsItsParentsTraceWithANewSpanId) {
  Collected sink;
  Tracer tracer(sink, Sampler::parent_based_always_on, 1.0);
  auto span = tracer.start("POST /api/chat", SpanKind::server, parent(true));
  span.set("http.response.status_code", std::int64_t{202});
  auto ctx = span.context();
  span.end();
  span.end();  // once only
  ASSERT_EQ(sink.spans.size(), 1u);
  const auto& s = sink.spans[0];
  EXPECT_EQ(s.context.trace_id, parent(true).trace_id);
  EXPECT_EQ(s.parent, parent(true).span_id);
  EXPECT_NE(s.context.span_id, parent(true).span_id);
  EXPECT_EQ(s.context.span_id, ctx.span_id);
  EXPECT_EQ(s.context.tracestate, "vendor=1");
  EXPECT_EQ(s.kind, SpanKind::server);
  EXPECT_LE(s.start_unix_nanos, s.end_unix_nanos);
  ASSERT_EQ(s.attributes.size(), 1u);
  EXPECT_EQ(std::get<std::int64_t>(s.attributes[0].value), 202);
}

TEST(Tracer, WithoutAParentASpanStartsANewTrace) {
  Collected sink;
  Tracer tracer(sink, Sampler::parent_based_always_on, 1.0);
  auto a = tracer.start("a", SpanKind::internal, {});
  auto b = tracer.start("b", SpanKind::internal, {});
  EXPECT_TRUE(a.context().valid());
  EXPECT_NE(a.context().trace_id, b.context().trace_id);
  a.end();
  EXPECT_EQ(sink.spans.at(0).parent, SpanId{});
}

TEST(Tracer, AnUnsampledParentIsRespectedAndItsDecisionPropagated) {
  Collected sink;
  Tracer tracer(sink, Sampler::parent_based_always_on, 1.0);
  auto span = tracer.start("x", SpanKind::server, parent(false));
  EXPECT_FALSE(span.recording());
  EXPECT_TRUE(span.context().valid());
  EXPECT_EQ(span.context().traceparent().substr(53), "00");
  span.end();
  EXPECT_TRUE(sink.spans.empty());
}

TEST(Tracer, SamplersDecideAsOpenTelemetryDefinesThem) {
  Collected sink;
  EXPECT_FALSE(Tracer(sink, Sampler::always_off, 1.0).start("x", SpanKind::internal, parent(true)).recording());
  EXPECT_TRUE(Tracer(sink, Sampler::always_on, 1.0).start("x", SpanKind::internal, parent(false)).recording());
  EXPECT_FALSE(Tracer(sink, Sampler::parent_based_always_off, 1.0).start("x", SpanKind::internal, {}).recording());
  EXPECT_TRUE(Tracer(sink, Sampler::parent_based_always_off, 1.0).start("x", SpanKind::internal, parent(true)).recording());
  // A ratio keeps about that share of new traces.
  Tracer half(sink, Sampler::trace_id_ratio, 0.25);
  int kept = 0;
  for (int i = 0; i < 4000; ++i) kept += half.start("x", SpanKind::internal, {}).recording() ? 1 : 0;
  EXPECT_GT(kept, 800);
  EXPECT_LT(kept, 1200);
  EXPECT_FALSE(Tracer(sink, Sampler::trace_id_ratio, 0.0).start("x", SpanKind::internal, {}).recording());
  EXPECT_TRUE(parse_sampler("parentbased_traceidratio"));
  EXPECT_FALSE(parse_sampler("sometimes"));
}

TEST(Tracer, AnOffTracerMakesSpansWithoutContext) {
  Tracer off;
  auto span = off.start("x", SpanKind::server, parent(true));
  EXPECT_FALSE(off.enabled());
  EXPECT_FALSE(span.recording());
  EXPECT_FALSE(span.context().valid());
  span.end();
}

TEST(Tracer, ASpanNeverEndedIsDroppedAndASharedOneEndsOnce) {
  Collected sink;
  Tracer tracer(sink, Sampler::always_on, 1.0);
  { auto abandoned = tracer.start("abandoned", SpanKind::internal, {}); }
  EXPECT_TRUE(sink.spans.empty());
  SharedSpan shared(tracer.start("store", SpanKind::client, {}));
  auto copy = shared;
  copy.end("database refused");
  shared.end();
  ASSERT_EQ(sink.spans.size(), 1u);
  EXPECT_TRUE(sink.spans[0].failed);
  EXPECT_EQ(sink.spans[0].status_message, "database refused");
}

}  // namespace
}  // namespace chat::trace
