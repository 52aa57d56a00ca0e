#include "bus/jetstream_chunk_log.hpp"

#include <boost/asio/error.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "log/log.hpp"

namespace asio = boost::asio;
using boost::system::error_code;

namespace chat::bus {
namespace {

// A reply is far below this; a session's log within the retention window too.
constexpr std::size_t kMaxPayloads = 200'000;
constexpr std::int64_t kNextWaitMs = 2'000;
// A read holds the JetStream thread, which the other reads (and a pod's
// shutdown) queue behind: past this it fails, and the reader asks again later.
constexpr std::chrono::seconds kReadLimit{5};

// How many entries the log holds on `subject`, in one request: the stream's
// own count per subject. A consumer's count of what it has still to send is
// not to be trusted: nats-server 2.9's drifts for a filter over many subjects
// (a session's replies), both ways. Most reads find nothing (a pod reads the
// log of every session whose first stream it opens) and need no consumer.
// Blocking.
error_code count_entries(jsCtx* js, const std::string& subject, std::uint64_t& count) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Info.SubjectsFilter = subject.c_str();
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, js, kLogStream, &o, &code);
  if (s != NATS_OK) return to_error_code(s);
  count = 0;
  if (const auto* subjects = info->State.Subjects)
    for (int i = 0; i < subjects->Count; ++i) count += subjects->List[i].Msgs;
  jsStreamInfo_Destroy(info);
  return {};
}

// An entry is its payloads one per line (NDJSON when they are JSON).
void add_payloads(std::string_view entry, std::vector<std::string>& out) {
  while (!entry.empty()) {
    auto end = entry.find('\n');
    auto line = entry.substr(0, end);
    if (!line.empty()) out.emplace_back(line);
    if (end == std::string_view::npos) break;
    entry.remove_prefix(end + 1);
  }
}

std::string join_lines(const std::vector<std::string>& payloads) {
  std::size_t size = 0;
  for (const auto& p : payloads) {
    if (p.find('\n') != std::string::npos) throw std::invalid_argument("a chunk log payload holds a line break");
    size += p.size() + 1;
  }
  std::string entry;
  entry.reserve(size);
  for (const auto& p : payloads) {
    if (&p != &payloads.front()) entry += '\n';
    entry += p;
  }
  return entry;
}

// Unsubscribes (which deletes the consumer) and hands the subscription to the
// bus to be freed later (NatsBus::retire), on every way out of a read.
struct RetiredOnExit {
  NatsBus& bus;
  NatsSubscriptionPtr sub;
  ~RetiredOnExit() {
    natsSubscription_Unsubscribe(sub.get());
    bus.retire(std::move(sub));
  }
};

// How far a read got, for the log when it fails.
struct ReadProgress {
  const char* step = "connect";  // the request under way
  std::uint64_t entries = 0;     // entries taken
  std::uint64_t expected = 0;    // entries the stream counted
};

// Reads the entries on `subject` with an ordered consumer, as many as the
// stream counted at the start (later ones follow them in the stream, so they
// are left out, as a read that came a moment earlier would have); blocking.
// An entry that leaves by age during the read makes it wait for one more and
// fail: the reader asks again.
error_code read_subject(JetStream& jetstream, const std::string& subject, std::vector<std::string>& out,
                        ReadProgress& progress) {
  jsCtx* js = jetstream.context();
  progress.step = "stream_info";
  if (auto ec = count_entries(js, subject, progress.expected)) return ec;
  if (progress.expected == 0) return {};
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = kLogStream;
  so.Ordered = true;
  so.Config.DeliverPolicy = js_DeliverAll;
  natsSubscription* raw = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  progress.step = "consumer_create";
  natsStatus s = js_SubscribeSync(&raw, js, subject.c_str(), nullptr, &so, &code);
  if (s != NATS_OK) return to_error_code(s);
  RetiredOnExit consumer{jetstream.bus(), NatsSubscriptionPtr(raw)};
  const auto deadline = std::chrono::steady_clock::now() + kReadLimit;
  progress.step = "next_message";
  while (progress.entries < progress.expected && out.size() < kMaxPayloads) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return asio::error::timed_out;
    if (jetstream.stopping()) return asio::error::operation_aborted;
    natsMsg* m = nullptr;
    s = natsSubscription_NextMsg(&m, consumer.sub.get(), std::min<std::int64_t>(kNextWaitMs, left.count()));
    if (s != NATS_OK) return to_error_code(s);
    NatsMsgPtr msg(m);
    ++progress.entries;
    add_payloads({natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))}, out);
  }
  return {};
}

}  // namespace

std::string JetStreamChunkLog::subject(const std::string& session_id, const std::string& message_id) {
  return "chat.log." + session_id + "." + message_id;
}

void JetStreamChunkLog::append(const std::string& session_id, const std::string& message_id, std::string entry_id,
                               const std::vector<std::string>& payloads, PublishCallback done) {
  js_.publish(subject(session_id, message_id), join_lines(payloads), entry_id, {}, std::move(done));
}

void JetStreamChunkLog::read(const std::string& session_id, const std::string& message_id, LogReadCallback done) {
  auto subject = "chat.log." + session_id + "." + (message_id.empty() ? std::string("*") : message_id);
  // Holds the JetStream, not this log: a read still queued when the log goes
  // runs (and gives up) while the JetStream stops.
  js_.run_blocking([&js = js_, subject = std::move(subject), done = std::move(done)]() mutable {
    std::vector<std::string> out;
    ReadProgress progress;
    const auto started = std::chrono::steady_clock::now();
    error_code ec = js.stopping() ? asio::error::operation_aborted
                    : js.ready()  ? read_subject(js, subject, out, progress)
                                  : asio::error::not_connected;
    if (ec && ec != asio::error::operation_aborted) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
      log::warn("chunk_log_read_failed", {{"subject", subject}, {"step", progress.step}, {"entries", progress.entries},
                                          {"expected", progress.expected}, {"ms", ms.count()},
                                          {"error", ec.message()}});
    }
    js.bus().defer([done = std::move(done), ec, out = std::move(out)]() mutable { done(ec, std::move(out)); });
  });
}

ComponentStatus JetStreamChunkLog::status() const { return {"jetstream", false, js_.bus().connected() && js_.ready()}; }

}  // namespace chat::bus
