#include "pod/reply_traces.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace chat::pod {
namespace {

using namespace std::chrono_literals;

struct Collected final : trace::SpanSink {
  void add(trace::SpanData span) override { spans.push_back(std::move(span)); }
  std::size_t named(const std::string& name) const {
    std::size_t n = 0;
    for (const auto& s : spans) n += s.name == name;
    return n;
  }
  std::vector<trace::SpanData> spans;
};

trace::SpanContext request_span() {
  return *trace::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

struct ReplyTracesTest : ::testing::Test {
  Collected sink;
  trace::Tracer tracer{sink, trace::Sampler::parent_based_always_on, 1.0};
};

TEST_F(ReplyTracesTest, AReplysFirstChunkAndStoreWriteJoinTheTraceOfTheRequestThatAskedForIt) {
  ReplyTraces traces(tracer, 10min);
  traces.accepted("m1", request_span());
  traces.first_chunk("m1");
  traces.first_chunk("m1");  // once per reply
  traces.store_write("m1").end();
  ASSERT_EQ(sink.spans.size(), 2u);
  for (const auto& s : sink.spans) {
    EXPECT_EQ(s.context.trace_id, request_span().trace_id) << s.name;
    EXPECT_EQ(s.parent, request_span().span_id) << s.name;
  }
  EXPECT_EQ(sink.named("chat.first_chunk"), 1u);
  EXPECT_EQ(sink.named("chat.store_reply"), 1u);
  traces.store_write("m1").end();
  EXPECT_EQ(sink.spans.size(), 2u) << "stored once: the reply was forgotten";
}

TEST_F(ReplyTracesTest, RepliesNeverStoredMakeRoomOnceTheirTimeIsOver) {
  ReplyTraces traces(tracer, 20ms);
  // Their workers never answered: nothing stores them, nothing forgets them.
  for (std::size_t i = 0; i < ReplyTraces::kMaxReplies; ++i) traces.accepted("m" + std::to_string(i), request_span());
  std::this_thread::sleep_for(30ms);
  traces.accepted("newest", request_span());
  traces.store_write("newest").end();
  EXPECT_EQ(sink.named("chat.store_reply"), 1u) << "a pod that piled up silent replies still traces new ones";
  traces.store_write("m0").end();
  EXPECT_EQ(sink.named("chat.store_reply"), 1u) << "the old entries went";
}

TEST_F(ReplyTracesTest, PastTheBoundWithEveryReplyStillYoungANewOneGoesUntraced) {
  ReplyTraces traces(tracer, 10min);
  for (std::size_t i = 0; i < ReplyTraces::kMaxReplies; ++i) traces.accepted("m" + std::to_string(i), request_span());
  traces.accepted("newest", request_span());
  traces.store_write("newest").end();
  EXPECT_EQ(sink.named("chat.store_reply"), 0u) << "bounded: replies still running are not pushed out";
  traces.store_write("m0").end();
  EXPECT_EQ(sink.named("chat.store_reply"), 1u);
}

}  // namespace
}  // namespace chat::pod
