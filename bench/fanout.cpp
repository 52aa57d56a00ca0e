// loadgen fanout: one chunk stream per session, fed to the server through its own publishing
// side and received by one SSE stream per session, checked and timed (bench/compare.sh).
//
//   loadgen fanout --target chatd --port P --nats-port N --pod POD --sessions S --seconds T [--rate R]
//   loadgen fanout --target nchan --port P --sessions S --seconds T [--rate R]
//
// chatd: each chunk is published with nats.c on chat.pod.{POD}.response, as chat-worker does
// (core NATS, one connection per loadgen thread). nchan: POST /pub/{session} on keep-alive
// connections (a session always on the same one, pipelined, so its order is kept), the chunk as
// the body. The bytes are the same either way: chatd's ResponseChunk JSON, ~200 bytes, its
// `timestamp` taken right before the publish. The subscriber checks every session's chunks
// arrive once and in order (a coalesced chatd event covers first_chunk_id..chunk_id).
//
// --rate 0 (default): closed loop, each session keeps --window chunks published and not yet
// received, so the figure is what the server delivers at full speed without a backlog.
// --rate R: R chunks/s in all, round-robin over the sessions, open loop (the latency figure).
// With --active K, K sessions at a time take their replies' chunks in turn, then the next K: a
// reply streams within a moment, as a real one does, however many sessions there are (plain
// round-robin over 50,000 sessions puts a reply's chunks 10 s apart at 5,000/s).

#include "fanout.hpp"

#include <nats/nats.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client.hpp"
#include "util.hpp"

namespace lg {
namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kSec = 1'000'000'000;
constexpr std::size_t kPipelineDepth = 64;  // nchan: publishes in flight on one connection

struct FanoutOptions {
  std::string target;  // chatd | nchan
  std::uint16_t port = 0;
  std::uint16_t nats_port = 4222;
  std::string pod = "bench";
  int threads = 2;
  int sessions = 1000;
  double seconds = 10;
  double warmup = 2;
  double drain = 10;
  double settle = 0;  // after every stream is up, before the RSS reading and the run
  double connect_seconds = 120;  // the streams that are not up by then are left out of the run
  double rate = 0;  // chunks/s in all; 0: closed loop
  int window = 4;   // closed loop: chunks in flight per session
  int chunks_per_message = 20;
  int active = 0;  // --rate: sessions taking their replies at a time; 0: all (plain round-robin)
  bool stagger = false;  // the sessions' replies end at different moments instead of all together
  int publishers = 16;  // nchan: publish connections per thread
  bool send_asap = false;  // chatd: nats.c writes each publish at once instead of batching
  std::string nats_url;    // chatd: overrides --nats-port (credentials: nats://user:pass@host:port)
  int source_ips = 0;      // streams connect from this many addresses 127.1.x.y (0: the kernel's choice)
  int source_offset = 0;   // the first of them, counted from 127.1.0.1
  int batch = 128;         // stream connects in flight per thread
  std::string text = "lorem ipsum ";
  std::string prefix;
  std::vector<int> pids;
  std::vector<int> broker_pids;  // chatd: the nats-server in between (its CPU is reported apart)
};

enum Phase : int { kConnect = 0, kRun = 1, kDrain = 2, kClose = 3 };
enum Kind : std::uint8_t { kStream = 0, kPublisher = 1 };

struct Shared {
  FanoutOptions opt;
  std::atomic<int> phase{kConnect};
  std::atomic<std::int64_t> connected{0};
  std::atomic<std::int64_t> outstanding{0};  // published, not yet received (all sessions)
  // Workers that have seen the drain begin and publish no more: until all have,
  // `outstanding` may still grow (a worker acts on the phase it read before its poll).
  std::atomic<int> publishers_stopped{0};
  std::int64_t run_start_ns = 0, window_start_ns = 0, window_end_ns = 0;  // set before phase leaves kConnect
};

struct FanoutStats {
  std::uint64_t published = 0, delivered = 0, events = 0, chunks_window = 0, events_window = 0;
  std::uint64_t gaps = 0, duplicates = 0, bad_event = 0, publish_errors = 0, publish_reconnects = 0, stream_drops = 0, stream_retries = 0;
  std::map<int, std::uint64_t> publish_status;
  Samples latency;
  std::vector<std::string> problems;

  void problem(std::string p) {
    if (problems.size() < 12) problems.push_back(std::move(p));
  }
  void merge(FanoutStats& o) {
    published += o.published;
    delivered += o.delivered;
    events += o.events;
    chunks_window += o.chunks_window;
    events_window += o.events_window;
    gaps += o.gaps;
    duplicates += o.duplicates;
    bad_event += o.bad_event;
    publish_errors += o.publish_errors;
    publish_reconnects += o.publish_reconnects;
    stream_drops += o.stream_drops;
    stream_retries += o.stream_retries;
    for (auto& [k, v] : o.publish_status) publish_status[k] += v;
    latency.merge(o.latency);
    for (auto& p : o.problems) problem(p);
  }
};

std::string rfc3339_now() {
  std::int64_t us = real_us();
  std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06dZ", static_cast<int>(us % 1'000'000));
  return buf;
}

class FanoutWorker : public Handler {
 public:
  FanoutWorker(Shared& sh, int tid) : sh_(sh), opt_(sh.opt) {
    for (int g = tid; g < opt_.sessions; g += opt_.threads) {
      auto s = std::make_unique<Sess>();
      s->c.handler = this;
      s->c.sse = true;
      s->c.kind = kStream;
      s->c.slot = static_cast<std::uint32_t>(sess_.size());
      s->id = opt_.prefix + "_" + std::to_string(g);
      if (opt_.source_ips > 0)
        s->c.source_ip = 0x7f010001u + static_cast<std::uint32_t>(opt_.source_offset + g % opt_.source_ips);
      if (opt_.pod != "auto") s->subject = "chat.pod." + opt_.pod + ".response";
      connect_q_.push_back(s->c.slot);
      sess_.push_back(std::move(s));
    }
    host_ = "Host: 127.0.0.1:" + std::to_string(opt_.port) + "\r\n";
    if (opt_.target == "nchan") {
      for (int i = 0; i < opt_.publishers; ++i) {
        auto p = std::make_unique<Publisher>();
        p->c.handler = this;
        p->c.kind = kPublisher;
        p->c.slot = static_cast<std::uint32_t>(pubs_.size());
        pubs_.push_back(std::move(p));
      }
    } else {
      std::string url = !opt_.nats_url.empty() ? opt_.nats_url : "nats://127.0.0.1:" + std::to_string(opt_.nats_port);
      natsOptions* nopts = nullptr;
      natsStatus st = natsOptions_Create(&nopts);
      if (st == NATS_OK) st = natsOptions_SetURL(nopts, url.c_str());
      if (st == NATS_OK) st = natsOptions_SetSendAsap(nopts, opt_.send_asap);
      if (st == NATS_OK) st = natsConnection_Connect(&nats_, nopts);
      natsOptions_Destroy(nopts);
      if (st != NATS_OK) {
        std::fprintf(stderr, "loadgen: NATS connect: %s\n", natsStatus_GetText(st));  // the URL may hold a password
        std::exit(1);
      }
    }
  }

  ~FanoutWorker() override {
    if (nats_) natsConnection_Destroy(nats_);
  }

  FanoutStats stats;

  void run() {
    int last_phase = kConnect;
    std::int64_t emitted = 0;
    while (true) {
      const int phase = sh_.phase.load(std::memory_order_acquire);
      if (phase >= kDrain && last_phase < kDrain) sh_.publishers_stopped.fetch_add(1, std::memory_order_release);
      if (phase == kClose) break;
      if (phase == kRun && last_phase != kRun && opt_.rate <= 0) {
        for (auto& s : sess_) top_up(*s);
      }
      last_phase = phase;
      loop_.poll(opt_.rate > 0 ? 1 : 10);
      const std::int64_t now = mono_ns();
      if (phase == kConnect) start_connects(now);
      if (reconnect_) {
        reconnect_ = false;
        for (auto& p : pubs_)
          if (!p->c.open() && !p->backlog.empty()) pump(*p);
      }
      if (phase == kRun && opt_.rate > 0 && !sess_.empty()) {
        const double per_thread = opt_.rate / opt_.threads;
        const auto due = static_cast<std::int64_t>(static_cast<double>(now - sh_.run_start_ns) / 1e9 * per_thread);
        for (; emitted < due; ++emitted) publish_next(*sess_[session_for(static_cast<std::uint64_t>(emitted))]);
      }
    }
    for (auto& s : sess_) loop_.close(s->c);
    for (auto& p : pubs_) loop_.close(p->c);
  }

  // Chunks published and not received, per session, after the drain.
  std::uint64_t undelivered() const {
    std::uint64_t n = 0;
    for (auto& s : sess_) n += s->published - s->received;
    return n;
  }

  // Streams that never received a chunk (none published for them counts too).
  std::uint64_t streams_without_chunks() const {
    std::uint64_t n = 0;
    for (auto& s : sess_) n += s->received == 0 ? 1 : 0;
    return n;
  }

 private:
  struct Sess {
    Conn c;
    std::string id;
    bool up = false;
    int attempts = 0;
    std::int64_t retry_ns = 0;
    std::string subject;          // chatd: where its pod takes its chunks
    std::uint64_t published = 0;  // sequence number of the next chunk to publish
    std::uint64_t received = 0;   // sequence number of the next chunk expected
  };
  struct Publisher {
    Conn c;
    using Item = std::pair<std::uint32_t, std::uint64_t>;  // (session slot, chunk seq)
    std::deque<Item> in_flight;  // the requests sent, in order
    std::deque<Item> backlog;    // beyond the pipeline, or to send again on a new connection
  };

  // The session of the run's chunk `e` (--rate): K sessions at a time (--active) take their
  // replies' chunks in turn, then the next K; with K = all of them, plain round-robin.
  std::size_t session_for(std::uint64_t e) const {
    const std::uint64_t n = sess_.size();
    const std::uint64_t k = opt_.active > 0 ? std::min<std::uint64_t>(static_cast<std::uint64_t>(opt_.active), n) : n;
    const std::uint64_t group = k * static_cast<std::uint64_t>(opt_.chunks_per_message);
    return static_cast<std::size_t>((e / group * k + e % group % k) % n);
  }

  bool in_window(std::int64_t t) const { return t >= sh_.window_start_ns && t < sh_.window_end_ns; }

  void start_connects(std::int64_t now) {
    while (pending_ < opt_.batch && !connect_q_.empty()) {
      Sess& s = *sess_[connect_q_.front()];
      if (s.retry_ns > now) break;
      connect_q_.pop_front();
      const std::string path = opt_.target == "nchan" ? "/sub/" + s.id : "/api/sse?session_id=" + s.id + "&user_id=u" + s.id;
      if (!loop_.connect(s.c, opt_.port)) {
        retry(s, now, std::string("connect: ") + std::strerror(errno));
        continue;
      }
      ++pending_;
      loop_.send(s.c, "GET " + path + " HTTP/1.1\r\n" + host_ + "Accept: text/event-stream\r\n\r\n");
    }
  }

  // A refused stream comes back later, as a browser's EventSource would (a
  // load balancer answers 502 while a pod is slow to accept); 8 tries at most.
  void retry(Sess& s, std::int64_t now, const std::string& why) {
    ++stats.stream_retries;
    if (++s.attempts >= 8) {
      stats.problem("gave up on stream " + s.id + ": " + why);
      return;
    }
    s.retry_ns = now + std::min<std::int64_t>(5'000, 250LL << s.attempts) * kMs;
    connect_q_.push_back(s.c.slot);
  }

  void mark_up(Sess& s) {
    if (s.up) return;
    s.up = true;
    --pending_;
    sh_.connected.fetch_add(1);
  }

  // A session's replies are M chunks long; with --stagger its first one is shorter by its slot
  // modulo M, so that at a steady round-robin rate the sessions' replies end spread out over
  // time, as real chats' do, instead of all in the same moment.
  std::uint64_t first_reply_length(const Sess& s) const {
    const auto m = static_cast<std::uint64_t>(opt_.chunks_per_message);
    return opt_.stagger ? m - s.c.slot % m : m;
  }

  // The sequence number of the first chunk of a session's reply `msg`.
  std::uint64_t reply_start(const Sess& s, std::uint64_t msg) const {
    const auto m = static_cast<std::uint64_t>(opt_.chunks_per_message);
    return msg == 0 ? 0 : first_reply_length(s) + (msg - 1) * m;
  }

  // The JSON of chunk `seq` of a session: its reply, its chunk id in the reply, the last one final.
  std::string chunk_json(const Sess& s, std::uint64_t seq) const {
    const auto m = static_cast<std::uint64_t>(opt_.chunks_per_message), first = first_reply_length(s);
    const std::uint64_t msg = seq < first ? 0 : 1 + (seq - first) / m;
    const std::uint64_t cid = seq - reply_start(s, msg);
    const bool final = cid + 1 == (msg == 0 ? first : m);
    std::string j = "{\"session_id\":\"" + s.id + "\",\"message_id\":\"" + s.id + "-m" + std::to_string(msg) +
                    "\",\"chunk_id\":" + std::to_string(cid) + ",\"chunk\":" + JsonLine::esc(opt_.text) +
                    ",\"chunk_type\":\"content\",\"is_final\":" + (final ? "true" : "false") + ",\"timestamp\":\"" +
                    rfc3339_now() + "\"";
    if (final) j += ",\"metadata\":{\"model\":\"bench\",\"finish_reason\":\"stop\",\"tokens_used\":" + std::to_string(cid + 1) + "}";
    return j + "}";
  }

  void top_up(Sess& s) {
    while (s.up && s.published - s.received < static_cast<std::uint64_t>(opt_.window)) publish_next(s);
  }

  void publish_next(Sess& s) {
    if (!s.up) return;
    const std::uint64_t seq = s.published++;
    ++stats.published;
    sh_.outstanding.fetch_add(1, std::memory_order_relaxed);
    if (nats_) {
      const std::string body = chunk_json(s, seq);
      natsStatus st = natsConnection_Publish(nats_, s.subject.c_str(), body.data(), static_cast<int>(body.size()));
      if (st != NATS_OK && ++stats.publish_errors <= 3) stats.problem(std::string("NATS publish: ") + natsStatus_GetText(st));
      return;
    }
    Publisher& p = *pubs_[s.c.slot % pubs_.size()];
    p.backlog.emplace_back(s.c.slot, seq);
    pump(p);
  }

  void pump(Publisher& p) {
    if (!p.c.open()) {
      if (!loop_.connect(p.c, opt_.port)) {
        if (++stats.publish_errors <= 3) stats.problem(std::string("publish connect: ") + std::strerror(errno));
        return;
      }
    }
    while (p.in_flight.size() < kPipelineDepth && !p.backlog.empty()) {
      auto [slot, seq] = p.backlog.front();
      p.backlog.pop_front();
      const std::string body = chunk_json(*sess_[slot], seq);
      loop_.send(p.c, "POST /pub/" + sess_[slot]->id + " HTTP/1.1\r\n" + host_ +
                          "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\n\r\n" + body);
      p.in_flight.emplace_back(slot, seq);
    }
  }

  void on_headers(Conn& c) override {
    if (c.kind != kStream) return;
    if (c.status != 200) return;  // its body follows: on_response
    if (opt_.target == "nchan") mark_up(*sess_[c.slot]);
  }

  void on_response(Conn& c, std::string_view body) override {
    if (c.kind == kStream) {
      Sess& s = *sess_[c.slot];
      loop_.close(c);
      --pending_;
      retry(s, c.recv_mono_ns, "HTTP " + std::to_string(c.status) + ": " + std::string(body.substr(0, 120)));
      return;
    }
    Publisher& p = *pubs_[c.slot];
    ++stats.publish_status[c.status];
    if (c.status != 201 && c.status != 202 && ++stats.publish_errors <= 3)
      stats.problem("publish HTTP " + std::to_string(c.status) + ": " + std::string(body.substr(0, 200)));
    if (!p.in_flight.empty()) p.in_flight.pop_front();
    pump(p);
  }

  void on_event(Conn& c, std::string_view type, std::string_view data, std::string_view) override {
    Sess& s = *sess_[c.slot];
    if (type == "connected") {
      if (s.subject.empty()) {  // --pod auto: behind a load balancer, the pod says who it is
        auto pod = json_member(data, "pod_id");
        if (!pod || pod->empty()) {
          if (++stats.bad_event <= 3) stats.problem("connected event without pod_id: " + std::string(data.substr(0, 200)));
          return;
        }
        s.subject = "chat.pod." + std::string(*pod) + ".response";
      }
      mark_up(s);
      return;
    }
    if (type != "chunk") return;  // chatd's message_complete and ping
    ++stats.events;
    auto msg = json_member(data, "message_id");
    auto cid = json_member(data, "chunk_id");
    auto cid_n = cid ? to_int(*cid) : std::nullopt;
    auto at = msg ? msg->rfind("-m") : std::string_view::npos;
    auto msg_n = at != std::string_view::npos ? to_int(msg->substr(at + 2)) : std::nullopt;
    if (!cid_n || !msg_n) {
      if (++stats.bad_event <= 3) stats.problem("chunk event not understood: " + std::string(data.substr(0, 200)));
      return;
    }
    auto first_text = json_member(data, "first_chunk_id");
    auto first_n = first_text ? to_int(*first_text) : cid_n;
    if (!first_n || *first_n > *cid_n) first_n = cid_n;
    const std::uint64_t base = reply_start(s, static_cast<std::uint64_t>(*msg_n));
    const std::uint64_t first = base + static_cast<std::uint64_t>(*first_n);
    const std::uint64_t last = base + static_cast<std::uint64_t>(*cid_n);
    if (last < s.received) {
      if (++stats.duplicates <= 3) stats.problem("duplicate chunk " + std::to_string(last) + " on " + s.id);
      return;
    }
    if (first != s.received) {
      if (first > s.received) {
        stats.gaps += first - s.received;
        stats.problem("gap on " + s.id + ": chunk " + std::to_string(first) + " after " + std::to_string(s.received));
      } else {
        ++stats.duplicates;
      }
    }
    const std::uint64_t n = last + 1 - std::max(first, s.received);
    s.received = last + 1;
    stats.delivered += n;
    sh_.outstanding.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    if (in_window(c.recv_mono_ns)) {
      stats.chunks_window += n;
      ++stats.events_window;
      auto ts = json_member(data, "timestamp");
      auto us = ts ? parse_rfc3339_us(*ts) : std::nullopt;
      if (us) stats.latency.add(c.recv_real_us - *us);
      else if (++stats.bad_event <= 3) stats.problem("chunk without an RFC 3339 timestamp");
    }
    if (opt_.rate <= 0 && sh_.phase.load(std::memory_order_acquire) == kRun && c.recv_mono_ns < sh_.window_end_ns)
      top_up(s);
  }

  void on_close(Conn& c, std::string_view why) override {
    if (c.kind == kStream) {
      Sess& s = *sess_[c.slot];
      if (!s.up) {  // never got going: tried again
        --pending_;
        retry(s, mono_ns(), std::string(why));
        return;
      }
      ++stats.stream_drops;
      stats.problem("stream " + s.id + " closed: " + std::string(why));
      s.up = false;
      return;
    }
    // nginx ends a keep-alive connection after keepalive_requests: what it had not answered
    // is sent again, first, on a new connection (from the run loop: not inside a callback).
    Publisher& p = *pubs_[c.slot];
    if (why != "closed by server after response") stats.problem("publish connection closed: " + std::string(why));
    ++stats.publish_reconnects;
    p.backlog.insert(p.backlog.begin(), p.in_flight.begin(), p.in_flight.end());
    p.in_flight.clear();
    reconnect_ = true;
  }

  Shared& sh_;
  const FanoutOptions& opt_;
  Loop loop_;
  std::vector<std::unique_ptr<Sess>> sess_;
  std::vector<std::unique_ptr<Publisher>> pubs_;
  std::deque<std::uint32_t> connect_q_;
  int pending_ = 0;
  std::string host_;
  natsConnection* nats_ = nullptr;
  bool reconnect_ = false;
};

[[noreturn]] void fanout_usage(const char* why) {
  if (why) std::fprintf(stderr, "loadgen fanout: %s\n\n", why);
  std::fprintf(stderr,
               "usage: loadgen fanout --target chatd|nchan --port P [options]\n"
               "  --sessions N (1000) --seconds S (10) --warmup S (2) --drain S (10) --threads T (2)\n"
               "  --settle S (0: after every stream is up, before the RSS reading and the run)\n"
               "  --rate R (0: closed loop) --window W (4 chunks in flight per session, closed loop)\n"
               "  --chunks-per-message M (20) --text TEXT (each chunk's text)\n"
               "  --active K (--rate: K sessions at a time take their replies' chunks in turn; 0: all)\n"
               "  --stagger 1 (the sessions' replies end spread out over time instead of all together)\n"
               "  chatd: --nats-port N (4222) | --nats-url URL, --pod POD (bench; auto: each stream's pod, from\n"
               "         its connected event)   nchan: --publishers N per thread (16)\n"
               "  --source-ips N [--source-offset K]: streams connect from 127.1.0.1+K .. +K+N-1 (through one port)\n"
               "  --batch N (128 stream connects in flight per thread)\n"
               "  --connect-seconds S (120: how long the streams have to come up)\n"
               "  --pid PID[,PID...] the server's processes (CPU, RSS)\n"
               "  --broker-pid PID[,PID...] the broker's processes (CPU, reported as cpu_percent.broker)\n");
  std::exit(2);
}

FanoutOptions parse_fanout(int argc, char** argv) {
  FanoutOptions o;
  o.prefix = "f" + std::to_string(real_us() / 1000 % 100'000'000);
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") fanout_usage(nullptr);
    if (i + 1 >= argc) fanout_usage(("missing value for " + k).c_str());
    std::string v = argv[++i];
    auto num = [&](double lo, double hi) {
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end || d < lo || d > hi) fanout_usage(("bad value for " + k + ": " + v).c_str());
      return d;
    };
    if (k == "--target") o.target = v;
    else if (k == "--port") o.port = static_cast<std::uint16_t>(num(1, 65535));
    else if (k == "--nats-port") o.nats_port = static_cast<std::uint16_t>(num(1, 65535));
    else if (k == "--pod") o.pod = v;
    else if (k == "--threads") o.threads = static_cast<int>(num(1, 64));
    else if (k == "--sessions") o.sessions = static_cast<int>(num(1, 100'000));
    else if (k == "--seconds") o.seconds = num(0.1, 86400);
    else if (k == "--warmup") o.warmup = num(0, 3600);
    else if (k == "--drain") o.drain = num(0, 3600);
    else if (k == "--settle") o.settle = num(0, 3600);
    else if (k == "--rate") o.rate = num(0, 10'000'000);
    else if (k == "--window") o.window = static_cast<int>(num(1, 10'000));
    else if (k == "--chunks-per-message") o.chunks_per_message = static_cast<int>(num(1, 100'000));
    else if (k == "--active") o.active = static_cast<int>(num(0, 1'000'000));
    else if (k == "--stagger") o.stagger = num(0, 1) != 0;
    else if (k == "--publishers") o.publishers = static_cast<int>(num(1, 1000));
    else if (k == "--text") o.text = v;
    else if (k == "--nats-send-asap") o.send_asap = num(0, 1) != 0;
    else if (k == "--nats-url") o.nats_url = v;
    else if (k == "--source-ips") o.source_ips = static_cast<int>(num(0, 60'000));
    else if (k == "--source-offset") o.source_offset = static_cast<int>(num(0, 60'000));
    else if (k == "--batch") o.batch = static_cast<int>(num(1, 100'000));
    else if (k == "--connect-seconds") o.connect_seconds = num(1, 3600);
    else if (k == "--prefix") o.prefix = v;
    else if (k == "--pid") o.pids = parse_pids(v);
    else if (k == "--broker-pid") o.broker_pids = parse_pids(v);
    else fanout_usage(("unknown option " + k).c_str());
  }
  if (o.target != "chatd" && o.target != "nchan") fanout_usage("--target takes chatd or nchan");
  if (o.port == 0) fanout_usage("--port is required");
  return o;
}

}  // namespace

int fanout_main(int argc, char** argv) {
  Shared sh;
  sh.opt = parse_fanout(argc, argv);
  const FanoutOptions& o = sh.opt;
  std::vector<std::unique_ptr<FanoutWorker>> workers;
  for (int t = 0; t < o.threads; ++t) workers.push_back(std::make_unique<FanoutWorker>(sh, t));
  const long rss_before = o.pids.empty() ? -1 : read_vmrss_kib(o.pids);
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });

  const std::int64_t connect_start = mono_ns();
  const std::int64_t connect_deadline = connect_start + static_cast<std::int64_t>(o.connect_seconds * 1e9);
  while (sh.connected.load() < o.sessions && mono_ns() < connect_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::int64_t up = sh.connected.load();
  const double connect_took = static_cast<double>(mono_ns() - connect_start) / 1e9;
  sleep_until_ns(mono_ns() + static_cast<std::int64_t>(o.settle * 1e9));
  const long rss_connected = o.pids.empty() ? -1 : read_vmrss_kib(o.pids);
  log("fanout (%s): %lld/%d streams up; publishing for %.1f s warm-up + %.1f s measured", o.target.c_str(),
      static_cast<long long>(up), o.sessions, o.warmup, o.seconds);

  sh.run_start_ns = mono_ns();
  sh.window_start_ns = sh.run_start_ns + static_cast<std::int64_t>(o.warmup * 1e9);
  sh.window_end_ns = sh.window_start_ns + static_cast<std::int64_t>(o.seconds * 1e9);
  sh.phase.store(kRun, std::memory_order_release);
  sleep_until_ns(sh.window_start_ns);
  const double cpu0 = o.pids.empty() ? -1 : read_cpu_seconds(o.pids), all0 = machine_busy_seconds(),
               self0 = self_cpu_seconds(), broker0 = o.broker_pids.empty() ? -1 : read_cpu_seconds(o.broker_pids);
  sleep_until_ns(sh.window_end_ns);
  const double cpu1 = o.pids.empty() ? -1 : read_cpu_seconds(o.pids), all1 = machine_busy_seconds(),
               self1 = self_cpu_seconds(), broker1 = o.broker_pids.empty() ? -1 : read_cpu_seconds(o.broker_pids);
  const long rss = o.pids.empty() ? -1 : read_vmrss_kib(o.pids);
  sh.phase.store(kDrain, std::memory_order_release);
  const std::int64_t drain_deadline = mono_ns() + static_cast<std::int64_t>(o.drain * 1e9);
  // Only once no worker publishes can "nothing outstanding" mean the run is
  // drained: before, the last chunks published were counted as never delivered.
  while (sh.publishers_stopped.load(std::memory_order_acquire) < o.threads && mono_ns() < drain_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  while (sh.outstanding.load() > 0 && mono_ns() < drain_deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  sh.phase.store(kClose, std::memory_order_release);
  for (auto& t : threads) t.join();

  FanoutStats st;
  std::uint64_t undelivered = 0, silent = 0;
  for (auto& w : workers) {
    st.merge(w->stats);
    undelivered += w->undelivered();
    silent += w->streams_without_chunks();
  }
  JsonLine integrity;
  integrity.integer("published", static_cast<std::int64_t>(st.published))
      .integer("delivered", static_cast<std::int64_t>(st.delivered))
      .integer("undelivered_after_drain", static_cast<std::int64_t>(undelivered))
      .integer("streams_without_chunks", static_cast<std::int64_t>(silent))
      .integer("gaps", static_cast<std::int64_t>(st.gaps))
      .integer("duplicates", static_cast<std::int64_t>(st.duplicates))
      .integer("bad_events", static_cast<std::int64_t>(st.bad_event))
      .integer("publish_errors", static_cast<std::int64_t>(st.publish_errors))
      .integer("publish_reconnects", static_cast<std::int64_t>(st.publish_reconnects))
      .integer("streams_dropped", static_cast<std::int64_t>(st.stream_drops))
      .integer("stream_connects_retried", static_cast<std::int64_t>(st.stream_retries))
      .raw("publish_status", status_json(st.publish_status));
  JsonLine cpu;
  if (!o.pids.empty()) cpu.num("server", (cpu1 - cpu0) / o.seconds * 100, 1);
  if (!o.broker_pids.empty()) cpu.num("broker", (broker1 - broker0) / o.seconds * 100, 1);
  cpu.num("loadgen", (self1 - self0) / o.seconds * 100, 1).num("machine", (all1 - all0) / o.seconds * 100, 1);
  JsonLine j;
  j.str("mode", "fanout")
      .str("target", o.target)
      .integer("sessions", o.sessions)
      .integer("streams_up", up)
      .num("connect_seconds", connect_took, 1)
      .num("rate_requested", o.rate, 0)
      .integer("window", o.window)
      .boolean("stagger", o.stagger)
      .boolean("nats_send_asap", o.target == "chatd" && o.send_asap)
      .num("seconds", o.seconds, 1)
      .num("chunk_events_per_sec", static_cast<double>(st.chunks_window) / o.seconds, 1)
      .num("sse_events_per_sec", static_cast<double>(st.events_window) / o.seconds, 1)
      .num("latency_p50_ms", st.latency.percentile_ms(50))
      .num("latency_p90_ms", st.latency.percentile_ms(90))
      .num("latency_p99_ms", st.latency.percentile_ms(99))
      .num("latency_p999_ms", st.latency.percentile_ms(99.9))
      .num("latency_max_ms", st.latency.max_ms())
      .integer("latency_samples", static_cast<std::int64_t>(st.latency.size()))
      .integer("latency_negative", static_cast<std::int64_t>(st.latency.negative()))
      .integer("server_rss_before_kib", rss_before)
      .integer("server_rss_connected_kib", rss_connected)
      .num("server_rss_per_stream_bytes",
           up > 0 && rss_before >= 0 && rss_connected >= 0
               ? static_cast<double>(rss_connected - rss_before) * 1024.0 / static_cast<double>(up)
               : -1,
           0)
      .integer("server_rss_kib", rss)
      .raw("cpu_percent", cpu.done())
      .raw("integrity", integrity.done());
  j.raw("problems", problems_json(st.problems));
  std::printf("%s\n", j.done().c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace lg
