#include "trace/span_context.hpp"

#include <gtest/gtest.h>

namespace chat::trace {
namespace {

constexpr const char* kExample = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceParent, TheW3CExampleParsesAndPrintsBackUnchanged) {
  auto c = parse_traceparent(kExample, "congo=t61rcWkgMzE");
  ASSERT_TRUE(c);
  EXPECT_EQ(to_hex(c->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(to_hex(c->span_id), "00f067aa0ba902b7");
  EXPECT_TRUE(c->sampled);
  EXPECT_EQ(c->tracestate, "congo=t61rcWkgMzE");
  EXPECT_EQ(c->traceparent(), kExample);
  auto h = c->headers();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0], (std::pair<std::string, std::string>{"traceparent", kExample}));
  EXPECT_EQ(h[1].second, "congo=t61rcWkgMzE");
}

TEST(TraceParent, TheSampledFlagIsReadFromBitZero) {
  auto c = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->sampled);
  EXPECT_TRUE(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")->sampled);
}

TEST(TraceParent, WhatTheW3CRulesRejectStartsANewTrace) {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",           // no flags
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        // zero span id
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",        // upper case
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  // v00 has 4 fields
           "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
       })
    EXPECT_FALSE(parse_traceparent(bad)) << bad;
}

TEST(TraceParent, ALaterVersionIsReadByItsFirstFourFields) {
  auto c = parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->traceparent(), kExample);  // sent on as the version this program speaks
  EXPECT_FALSE(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
}

TEST(TraceParent, AnUnsafeOrOversizedTracestateIsDroppedButTheParentKept) {
  auto with_newline = parse_traceparent(kExample, "a=b\r\nX-Injected: 1");
  ASSERT_TRUE(with_newline);
  EXPECT_EQ(with_newline->tracestate, "");
  auto huge = parse_traceparent(kExample, std::string(600, 'a'));
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->tracestate, "");
  EXPECT_EQ(huge->headers().size(), 1u);
}

TEST(TraceParent, AnInvalidContextPropagatesNothing) {
  SpanContext none;
  EXPECT_FALSE(none.valid());
  EXPECT_EQ(none.traceparent(), "");
  EXPECT_TRUE(none.headers().empty());
}

TEST(TraceIds, NewIdsAreNeverZeroAndDoNotRepeat) {
  auto a = new_trace_id(), b = new_trace_id();
  EXPECT_NE(a, TraceId{});
  EXPECT_NE(a, b);
  EXPECT_NE(new_span_id(), SpanId{});
  EXPECT_NE(new_span_id(), new_span_id());
}

}  // namespace
}  // namespace chat::trace
