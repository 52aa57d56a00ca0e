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

// Whether the log holds anything on `subject`, in one request: reading takes a
// consumer made and deleted on the server, and most reads find nothing (a pod
// reads the log of every session whose first stream it opens). Blocking.
error_code has_entries(jsCtx* js, const std::string& subject, bool& any) {
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Info.SubjectsFilter = subject.c_str();
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, js, kLogStream, &o, &code);
  if (s != NATS_OK) return to_error_code(s);
  any = info->State.Subjects != nullptr && info->State.Subjects->Count > 0;
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
  std::uint64_t pending = 0;     // entries the server still had to send
};

// Reads every entry on `subject` with an ordered consumer; blocking.
error_code read_subject(JetStream& jetstream, const std::string& subject, std::vector<std::string>& out,
                        ReadProgress& progress) {
  jsCtx* js = jetstream.context();
  // The question is a shortcut: a server that cannot answer it (say, too many
  // subjects to list) may still serve the read; one that is away cannot.
  bool any = true;
  progress.step = "stream_info";
  error_code ec = has_entries(js, subject, any);
  if (ec == asio::error::timed_out || ec == asio::error::not_connected) return ec;
  if (!ec && !any) return {};
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
  jsConsumerInfo* info = nullptr;
  progress.step = "consumer_info";
  s = natsSubscription_GetConsumerInfo(&info, consumer.sub.get(), nullptr, &code);
  if (s != NATS_OK) return to_error_code(s);
  // The server pushes at once: what it already sent counts as well as what it has not.
  std::uint64_t pending = info->NumPending + info->Delivered.Consumer;
  jsConsumerInfo_Destroy(info);
  const auto deadline = std::chrono::steady_clock::now() + kReadLimit;
  progress.step = "next_message";
  while (pending > 0 && out.size() < kMaxPayloads) {
    progress.pending = pending;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return asio::error::timed_out;
    if (jetstream.stopping()) return asio::error::operation_aborted;
    natsMsg* m = nullptr;
    s = natsSubscription_NextMsg(&m, consumer.sub.get(), std::min<std::int64_t>(kNextWaitMs, left.count()));
    if (s != NATS_OK) return to_error_code(s);
    NatsMsgPtr msg(m);
    ++progress.entries;
    add_payloads({natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))}, out);
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
      pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
    } else {
      --pending;
    }
  }
  return {};
}

std::int64_t since_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
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
    if (ec && ec != asio::error::operation_aborted)
      log::warn("chunk_log_read_failed", {{"subject", subject}, {"step", progress.step}, {"entries", progress.entries},
                                          {"pending", progress.pending}, {"ms", since_ms(started)},
                                          {"error", ec.message()}});
    js.bus().defer([done = std::move(done), ec, out = std::move(out)]() mutable { done(ec, std::move(out)); });
  });
}

ComponentStatus JetStreamChunkLog::status() const { return {"jetstream", false, js_.bus().connected() && js_.ready()}; }

}  // namespace chat::bus
