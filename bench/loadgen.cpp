// loadgen: load generator for chatd (docs/API.md#http-api), epoll-based, a few threads.
//
//   loadgen hold   --port P --connections N --hold-seconds S [--pid PID]
//   loadgen stream --port P --sessions N --seconds S [--warmup W] [--pid PID]
//   loadgen post   --port P --seconds S --concurrency C
//   loadgen fanout --target chatd|nchan --port P ...   (bench/fanout.cpp)
//
// Each prints one JSON line on stdout; progress goes to stderr. Every phase is
// bounded in time and only 127.0.0.1 is targeted. See docs/BENCHMARKS.md.

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client.hpp"
#include "fanout.hpp"
#include "nats_hop.hpp"
#include "util.hpp"

namespace lg {
namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kSec = 1'000'000'000;

struct Options {
  std::string mode;
  std::uint16_t port = 8080;
  int threads = 2;
  int connections = 1000;  // hold
  int sessions = 1000;     // stream
  double seconds = 10;     // stream/post measuring window
  double hold_seconds = 10;
  double warmup = 2;
  double drain = 15;
  double settle = 2;
  int concurrency = 64;      // post
  int post_conns = 0;        // stream: POST connections per thread (0: one per session)
  double stagger = 0;        // stream: spread the first chats of the sessions over this many seconds
  int batch = 256;           // connects in progress at once (all threads)
  double connect_timeout = 120;
  double stall_seconds = 5;  // a message with no event for this long counts as stalled
  int max_attempts = 8;      // per SSE connection before giving up
  std::vector<int> pids;     // the server's processes (chatd; nginx's master and workers), for RSS/CPU readings
  std::string prefix;        // session id prefix; default from the clock
  std::string user = "bench";
  std::string sse_path = "/api/sse?session_id={session}&user_id={user}";  // hold, stream
  bool ready_on_headers = false;  // a stream is up at its 200 (servers without a `connected` event)
  std::string message = "Hello from the benchmark";
};

enum Phase : int { kConnect = 0, kRun = 1, kDrain = 2, kClose = 3 };
enum Kind : std::uint8_t { kSse = 0, kPoster = 1 };

struct Shared {
  Options opt;
  std::atomic<int> phase{kConnect};
  std::atomic<std::int64_t> connected{0};
  std::atomic<std::int64_t> given_up{0};
  std::atomic<std::int64_t> posters_up{0};    // stream: POST connections opened before the run
  std::atomic<std::int64_t> posters_want{0};
  std::atomic<std::int64_t> busy{0};  // stream: sessions with a message posted and not complete
  // Set before phase leaves kConnect (published by the release store of phase).
  std::int64_t window_start_ns = 0;
  std::int64_t window_end_ns = 0;
};

struct Stats {
  std::uint64_t ev_connected = 0, ev_chunk = 0, ev_complete = 0, ev_ping = 0, ev_error = 0, ev_reset = 0,
                ev_other = 0;
  std::uint64_t chunks_window = 0, dups_window = 0, completes_window = 0;
  std::uint64_t order_gaps = 0, order_dups = 0, bad_chunk = 0, bad_timestamp = 0, id_mismatch = 0,
                complete_without_final = 0;
  std::uint64_t sse_connect_failures = 0, sse_timeouts = 0, sse_dropped = 0, sse_reconnects = 0;
  std::uint64_t posts_ok = 0, posts_ok_window = 0, post_errors = 0, post_conn_errors = 0, post_reconnects = 0;
  std::uint64_t stalls = 0, slow_posts_fresh = 0, slow_posts_reused = 0;
  std::map<int, std::uint64_t> sse_status, post_status;
  Samples chunk_lat, post_lat, message_lat, queue_wait;
  Samples connect_lat;  // a stream's first connect: TCP connect started to its `connected` event
  std::vector<std::string> problems;

  void problem(std::string p) {
    if (problems.size() < 12) problems.push_back(std::move(p));
  }
  void merge(Stats& o) {
    ev_connected += o.ev_connected;
    ev_chunk += o.ev_chunk;
    ev_complete += o.ev_complete;
    ev_ping += o.ev_ping;
    ev_error += o.ev_error;
    ev_reset += o.ev_reset;
    ev_other += o.ev_other;
    chunks_window += o.chunks_window;
    dups_window += o.dups_window;
    completes_window += o.completes_window;
    order_gaps += o.order_gaps;
    order_dups += o.order_dups;
    bad_chunk += o.bad_chunk;
    bad_timestamp += o.bad_timestamp;
    id_mismatch += o.id_mismatch;
    complete_without_final += o.complete_without_final;
    sse_connect_failures += o.sse_connect_failures;
    sse_timeouts += o.sse_timeouts;
    sse_dropped += o.sse_dropped;
    sse_reconnects += o.sse_reconnects;
    posts_ok += o.posts_ok;
    posts_ok_window += o.posts_ok_window;
    post_errors += o.post_errors;
    post_conn_errors += o.post_conn_errors;
    post_reconnects += o.post_reconnects;
    stalls += o.stalls;
    slow_posts_fresh += o.slow_posts_fresh;
    slow_posts_reused += o.slow_posts_reused;
    for (auto& [k, v] : o.sse_status) sse_status[k] += v;
    for (auto& [k, v] : o.post_status) post_status[k] += v;
    chunk_lat.merge(o.chunk_lat);
    post_lat.merge(o.post_lat);
    message_lat.merge(o.message_lat);
    queue_wait.merge(o.queue_wait);
    connect_lat.merge(o.connect_lat);
    for (auto& p : o.problems) problem(p);
  }
};

class Worker : public Handler {
 public:
  Worker(Shared& sh, int tid) : sh_(sh), opt_(sh.opt), tid_(tid) {
    const int t = opt_.threads;
    if (opt_.mode == "hold" || opt_.mode == "stream") {
      int total = opt_.mode == "hold" ? opt_.connections : opt_.sessions;
      for (int g = tid; g < total; g += t) {
        auto s = std::make_unique<Sess>();
        s->gid = static_cast<std::uint32_t>(g);
        s->c.handler = this;
        s->c.sse = true;
        s->c.kind = kSse;
        s->c.slot = static_cast<std::uint32_t>(sess_.size());
        s->session_id = opt_.prefix + "_" + std::to_string(g);
        s->user_id = opt_.user + "_" + std::to_string(g);
        connect_q_.push_back(s->c.slot);
        sess_.push_back(std::move(s));
      }
      connect_limit_ = std::max(1, opt_.batch / t);
    }
    int posters = 0;
    if (opt_.mode == "stream") posters = opt_.post_conns > 0 ? opt_.post_conns : static_cast<int>(sess_.size());
    if (opt_.mode == "post") posters = opt_.concurrency / t + (tid < opt_.concurrency % t ? 1 : 0);
    for (int i = 0; i < posters; ++i) {
      auto p = std::make_unique<Poster>();
      p->c.handler = this;
      p->c.kind = kPoster;
      p->c.slot = static_cast<std::uint32_t>(posters_.size());
      // stream: open every POST connection before the run, so that connection set-up is not
      // part of what is measured (a client fleet would have its connections open).
      if (opt_.mode == "stream") poster_q_.push_back(p->c.slot);
      posters_.push_back(std::move(p));
    }
    sh_.posters_want.fetch_add(static_cast<std::int64_t>(poster_q_.size()));
    host_ = "Host: 127.0.0.1:" + std::to_string(opt_.port) + "\r\n";
  }

  void run() {
    std::int64_t last_scan = 0;
    int last_phase = kConnect;
    while (true) {
      int phase = sh_.phase.load(std::memory_order_acquire);
      if (phase == kClose) break;
      if (phase == kRun && last_phase != kRun && opt_.mode == "stream") {
        // First chat of every session, spread over --stagger seconds by global index so
        // that replies (and their completions) do not all run in lockstep.
        std::int64_t t0 = mono_ns();
        for (auto& s : sess_) {
          if (!s->up || s->busy) continue;
          s->busy = true;
          sh_.busy.fetch_add(1);
          delayed_.push_back({t0 + static_cast<std::int64_t>(opt_.stagger * 1e9 * s->gid / opt_.sessions), s->c.slot});
        }
      }
      last_phase = phase;
      loop_.poll(10);
      std::int64_t now = mono_ns();
      while (!delayed_.empty() && delayed_.front().first <= now) {
        want_post(*sess_[delayed_.front().second]);
        delayed_.pop_front();
      }
      start_connects(now);
      if (phase == kRun || phase == kDrain) drive_posters(now, phase);
      if (now - last_scan > 250 * kMs) {
        scan(now);
        last_scan = now;
      }
    }
    for (auto& s : sess_) loop_.close(s->c);
    for (auto& p : posters_) loop_.close(p->c);
  }

  Stats stats;

  // Sessions still waiting for a reply at the end (stream mode), for the report.
  std::vector<std::string> unfinished(std::size_t max) const {
    std::vector<std::string> out;
    for (auto& s : sess_) {
      if (s->busy && out.size() < max)
        out.push_back(s->session_id + " posted=" + (s->inflight.empty() ? "(no 202 yet)" : s->inflight) +
                      " last_chunk=" + std::to_string(s->next_chunk - 1) + " of " + s->cur_msg);
    }
    return out;
  }

 private:
  struct Sess {
    Conn c;
    std::uint32_t gid = 0;
    std::string session_id, user_id;
    int attempts = 0;
    bool pending = false, up = false, gave_up = false;
    std::int64_t start_ns = 0, retry_ns = 0;
    // stream
    bool busy = false;           // a reply is expected
    bool stall_counted = false;
    std::string inflight;        // message_id from the 202, until its message_complete
    std::string last_done;       // last message_complete seen (may precede the 202)
    std::string cur_msg;         // message whose chunks are arriving
    std::string final_msg;       // message whose is_final chunk arrived
    std::int64_t next_chunk = 0;
    std::int64_t posted_ns = 0, last_ev_ns = 0, queued_ns = 0;
  };
  struct Poster {
    Conn c;
    bool busy = false;
    std::int64_t sent_ns = 0, retry_ns = 0;
    std::int64_t sess = -1;  // stream: local session index of the request in flight
    std::uint64_t seq = 0;
    bool fresh = false;      // the request in flight is the first on a new connection
    bool pending = false;    // opened up front, not yet connected
  };

  bool in_window(std::int64_t t) const { return t >= sh_.window_start_ns && t < sh_.window_end_ns; }

  void start_connects(std::int64_t now) {
    while (pending_ < connect_limit_ && !connect_q_.empty()) {
      Sess& s = *sess_[connect_q_.front()];
      if (s.retry_ns > now) break;
      connect_q_.pop_front();
      std::string req = "GET " + sse_path(s) + " HTTP/1.1\r\n" + host_ +
                        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
      if (!loop_.connect(s.c, opt_.port)) {
        ++stats.sse_connect_failures;
        retry_sse(s, now, std::string("connect: ") + std::strerror(errno));
        continue;
      }
      s.pending = true;
      s.start_ns = now;
      ++pending_;
      loop_.send(s.c, req);
    }
    while (pending_ < connect_limit_ && connect_q_.empty() && !poster_q_.empty()) {
      Poster& p = *posters_[poster_q_.front()];
      poster_q_.pop_front();
      if (p.c.open()) continue;
      if (!connect_poster(p, now)) {
        sh_.posters_want.fetch_sub(1);  // opened lazily later
        continue;
      }
      p.pending = true;
      ++pending_;
    }
  }

  void on_open(Conn& c) override {
    if (c.kind != kPoster) return;
    Poster& p = *posters_[c.slot];
    if (p.pending) {
      p.pending = false;
      p.fresh = false;
      --pending_;
      sh_.posters_up.fetch_add(1);
    }
  }

  void retry_sse(Sess& s, std::int64_t now, const std::string& why) {
    if (++s.attempts >= opt_.max_attempts) {
      if (!s.gave_up) {
        s.gave_up = true;
        sh_.given_up.fetch_add(1);
        stats.problem("gave up on SSE " + s.session_id + " after " + std::to_string(s.attempts) + " attempts: " + why);
      }
      return;
    }
    s.retry_ns = now + std::min<std::int64_t>(2000, 50LL << s.attempts) * kMs;
    connect_q_.push_back(s.c.slot);
  }

  void end_pending(Sess& s) {
    if (s.pending) {
      s.pending = false;
      --pending_;
    }
  }

  // Periodic checks: connects that hang, replies that stall.
  void scan(std::int64_t now) {
    for (auto& sp : sess_) {
      Sess& s = *sp;
      if (s.pending && now - s.start_ns > 15 * kSec) {
        ++stats.sse_timeouts;
        loop_.close(s.c);
        end_pending(s);
        retry_sse(s, now, "no connected event within 15 s");
      }
      if (s.busy && !s.stall_counted && now - std::max(s.posted_ns, s.last_ev_ns) >
                                            static_cast<std::int64_t>(opt_.stall_seconds * 1e9)) {
        s.stall_counted = true;
        ++stats.stalls;
        stats.problem("stall: session " + s.session_id + " message " + (s.inflight.empty() ? "?" : s.inflight) +
                      " silent for " + std::to_string(opt_.stall_seconds) + " s after chunk " +
                      std::to_string(s.next_chunk - 1));
      }
    }
  }

  std::string post_request(const std::string& session, const std::string& user) {
    std::string body = "{\"session_id\":\"" + session + "\",\"user_id\":\"" + user + "\",\"message\":" +
                       JsonLine::esc(opt_.message) + "}";
    return "POST /api/chat HTTP/1.1\r\n" + host_ + "Content-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }

  void drive_posters(std::int64_t now, int phase) {
    for (auto& pp : posters_) {
      Poster& p = *pp;
      if (p.busy || p.retry_ns > now) continue;
      std::string req;
      if (opt_.mode == "stream") {
        if (post_q_.empty()) return;
        if (!p.c.open() && !connect_poster(p, now)) continue;
        p.sess = post_q_.front();
        post_q_.pop_front();
        Sess& s = *sess_[static_cast<std::size_t>(p.sess)];
        stats.queue_wait.add((now - s.queued_ns) / 1000);
        s.posted_ns = now;
        s.stall_counted = false;
        req = post_request(s.session_id, s.user_id);
      } else {
        if (phase != kRun || now >= sh_.window_end_ns) continue;
        if (!p.c.open() && !connect_poster(p, now)) continue;
        req = post_request(opt_.prefix + "_" + std::to_string(tid_) + "_" + std::to_string(p.c.slot) + "_" +
                               std::to_string(p.seq++),
                           opt_.user);
      }
      p.busy = true;
      p.sent_ns = now;
      loop_.send(p.c, req);
    }
  }

  bool connect_poster(Poster& p, std::int64_t now) {
    if (loop_.connect(p.c, opt_.port)) {
      ++stats.post_reconnects;
      p.fresh = true;
      return true;
    }
    ++stats.post_conn_errors;
    stats.problem(std::string("POST connect: ") + std::strerror(errno));
    p.retry_ns = now + 100 * kMs;
    return false;
  }

  // stream: session s wants a (new) reply.
  void want_post(Sess& s) {
    if (!s.busy) {
      s.busy = true;
      sh_.busy.fetch_add(1);
    }
    s.queued_ns = mono_ns();
    post_q_.push_back(s.c.slot);
  }

  void done_post(Sess& s, std::int64_t now) {
    if (s.busy) {
      s.busy = false;
      sh_.busy.fetch_sub(1);
    }
    s.inflight.clear();
    if (sh_.phase.load(std::memory_order_acquire) == kRun && now < sh_.window_end_ns) want_post(s);
  }

  void post_failed(Poster& p, std::int64_t now) {
    p.busy = false;
    if (p.sess >= 0) {
      Sess& s = *sess_[static_cast<std::size_t>(p.sess)];
      p.sess = -1;
      if (sh_.phase.load(std::memory_order_acquire) == kRun && now < sh_.window_end_ns) {
        post_q_.push_back(s.c.slot);
      } else if (s.busy) {
        s.busy = false;
        sh_.busy.fetch_sub(1);
      }
    }
  }

  void on_event(Conn& c, std::string_view type, std::string_view data, std::string_view id) override {
    Sess& s = *sess_[c.slot];
    s.last_ev_ns = c.recv_mono_ns;
    if (type == "chunk") {
      on_chunk(s, c, data, id);
    } else if (type == "ping") {
      ++stats.ev_ping;
    } else if (type == "connected") {
      ++stats.ev_connected;
      mark_up(s, c);
    } else if (type == "message_complete") {
      ++stats.ev_complete;
      auto msg = json_member(data, "message_id");
      if (!msg) {
        stats.problem("message_complete without message_id: " + std::string(data.substr(0, 200)));
        return;
      }
      if (s.final_msg != *msg) {
        ++stats.complete_without_final;
        stats.problem("message_complete before the final chunk: " + std::string(data.substr(0, 200)));
      }
      if (in_window(c.recv_mono_ns)) ++stats.completes_window;
      s.last_done.assign(*msg);
      if (!s.inflight.empty() && s.inflight == *msg) {
        stats.message_lat.add((c.recv_mono_ns - s.posted_ns) / 1000);
        done_post(s, c.recv_mono_ns);
      }
    } else if (type == "error") {
      ++stats.ev_error;
      stats.problem("error event on " + s.session_id + ": " + std::string(data.substr(0, 300)));
    } else if (type == "reset") {
      ++stats.ev_reset;
      stats.problem("reset event on " + s.session_id + ": " + std::string(data.substr(0, 300)));
    } else {
      ++stats.ev_other;
      stats.problem("unexpected event '" + std::string(type) + "': " + std::string(data.substr(0, 200)));
    }
  }

  void on_chunk(Sess& s, Conn& c, std::string_view data, std::string_view id) {
    ++stats.ev_chunk;
    auto msg = json_member(data, "message_id");
    auto cid_text = json_member(data, "chunk_id");
    auto cid = cid_text ? to_int(*cid_text) : std::nullopt;
    if (!msg || !cid) {
      ++stats.bad_chunk;
      stats.problem("chunk without message_id/chunk_id: " + std::string(data.substr(0, 200)));
      return;
    }
    if (id.size() != msg->size() + 1 + cid_text->size() || id.substr(0, msg->size()) != *msg ||
        id[msg->size()] != ':' || id.substr(msg->size() + 1) != *cid_text) {
      if (++stats.id_mismatch <= 3) stats.problem("chunk id field '" + std::string(id) + "' for " + std::string(data.substr(0, 120)));
    }
    // A stream that fell behind gets coalesced events, each covering first_chunk_id..chunk_id.
    auto first_text = json_member(data, "first_chunk_id");
    auto first = first_text ? to_int(*first_text) : cid;
    if (!first || *first > *cid) first = cid;
    const bool duplicate = !check_order(s, *msg, *first);
    // A chunk the client already had is not delivered work: it counts as an error, not in the figures.
    if (in_window(c.recv_mono_ns)) {
      if (duplicate) {
        ++stats.dups_window;
      } else {
        stats.chunks_window += static_cast<std::uint64_t>(*cid - *first + 1);
        add_latency(c, data);
      }
    }
    if (duplicate) return;
    s.next_chunk = *cid + 1;
    auto fin = json_member(data, "is_final");
    if (fin && *fin == "true") s.final_msg.assign(*msg);
  }

  // Chunk ids of a message must come 0, 1, 2, …: counts gaps and duplicates. False for a
  // duplicate (or older) chunk, which changes nothing of the session's progress.
  bool check_order(Sess& s, std::string_view msg, std::int64_t cid) {
    if (s.cur_msg != msg) {
      if (cid != 0) {
        ++stats.order_gaps;
        stats.problem("first chunk of " + std::string(msg) + " on " + s.session_id + " is " + std::to_string(cid));
      }
      s.cur_msg.assign(msg);
    } else if (cid < s.next_chunk) {
      ++stats.order_dups;
      stats.problem("duplicate/old chunk " + std::to_string(cid) + " of " + s.cur_msg + " (expected " +
                    std::to_string(s.next_chunk) + ")");
      return false;
    } else if (cid > s.next_chunk) {
      ++stats.order_gaps;
      stats.problem("gap: chunk " + std::to_string(cid) + " of " + s.cur_msg + " after " +
                    std::to_string(s.next_chunk - 1));
    }
    return true;
  }

  // Receipt (client CLOCK_REALTIME) minus the chunk's timestamp. A negative one means the
  // clocks disagree: it is kept as it is, counted and quoted, never made 0.
  void add_latency(const Conn& c, std::string_view data) {
    auto ts = json_member(data, "timestamp");
    auto us = ts ? parse_rfc3339_us(*ts) : std::nullopt;
    if (!us) {
      if (++stats.bad_timestamp <= 3)
        stats.problem("chunk timestamp not RFC 3339: " + std::string(ts ? *ts : "(absent)"));
      return;
    }
    std::int64_t latency = c.recv_real_us - *us;
    stats.chunk_lat.add(latency);
    if (latency < 0 && stats.chunk_lat.negative() <= 3)
      stats.problem("negative chunk latency " + std::to_string(latency) + " us: timestamp " + std::string(*ts) +
                    " is after its receipt");
  }

  void on_headers(Conn& c) override {
    if (c.kind != kSse) return;
    if (c.status != 200) ++stats.sse_status[c.status];
    else if (opt_.ready_on_headers) mark_up(*sess_[c.slot], c);
  }

  // The stream is subscribed: chatd says so with its `connected` event; a server without one
  // (nchan) with its 200 (--ready headers).
  void mark_up(Sess& s, const Conn& c) {
    if (s.up) return;
    if (s.pending && s.attempts == 0) stats.connect_lat.add((c.recv_mono_ns - s.start_ns) / 1000);
    s.up = true;
    s.attempts = 0;
    end_pending(s);
    sh_.connected.fetch_add(1);
    if (sh_.phase.load(std::memory_order_acquire) == kRun && opt_.mode == "stream" && !s.busy) want_post(s);
  }

  std::string sse_path(const Sess& s) const {
    std::string path = opt_.sse_path;
    for (auto [key, value] : {std::pair<std::string_view, const std::string&>{"{session}", s.session_id},
                              {"{user}", s.user_id}}) {
      for (auto at = path.find(key); at != std::string::npos; at = path.find(key, at + value.size()))
        path.replace(at, key.size(), value);
    }
    return path;
  }

  void on_response(Conn& c, std::string_view body) override {
    std::int64_t now = c.recv_mono_ns;
    if (c.kind == kSse) {  // a non-200 answer to an SSE request
      Sess& s = *sess_[c.slot];
      stats.problem("SSE " + s.session_id + ": HTTP " + std::to_string(c.status) + " " +
                    std::string(body.substr(0, 200)));
      loop_.close(c);
      end_pending(s);
      retry_sse(s, now, "HTTP " + std::to_string(c.status));
      return;
    }
    Poster& p = *posters_[c.slot];
    ++stats.post_status[c.status];
    if (!p.busy) {
      stats.problem("unsolicited response on a POST connection: HTTP " + std::to_string(c.status));
      return;
    }
    stats.post_lat.add((now - p.sent_ns) / 1000);
    if (now - p.sent_ns > kSec) ++(p.fresh ? stats.slow_posts_fresh : stats.slow_posts_reused);
    p.fresh = false;
    auto msg = json_member(body, "message_id");
    if (c.status != 202 || !msg || msg->empty()) {
      ++stats.post_errors;
      stats.problem("POST /api/chat: HTTP " + std::to_string(c.status) + " " + std::string(body.substr(0, 200)));
      p.retry_ns = now + 100 * kMs;
      post_failed(p, now);
      return;
    }
    ++stats.posts_ok;
    if (in_window(now)) ++stats.posts_ok_window;
    p.busy = false;
    if (p.sess >= 0) {
      Sess& s = *sess_[static_cast<std::size_t>(p.sess)];
      p.sess = -1;
      s.inflight.assign(*msg);
      if (s.last_done == s.inflight) {  // the reply finished before its 202 arrived
        stats.message_lat.add((now - s.posted_ns) / 1000);
        done_post(s, now);
      }
    }
  }

  void on_close(Conn& c, std::string_view why) override {
    std::int64_t now = mono_ns();
    if (c.kind == kPoster) {
      Poster& p = *posters_[c.slot];
      if (p.pending) {
        p.pending = false;
        --pending_;
        sh_.posters_want.fetch_sub(1);
        ++stats.post_conn_errors;
        stats.problem("POST connection failed: " + std::string(why));
      }
      if (p.busy) {
        ++stats.post_errors;
        stats.problem("POST connection lost mid-request: " + std::string(why));
        p.retry_ns = now + 50 * kMs;
        post_failed(p, now);
      }
      return;
    }
    Sess& s = *sess_[c.slot];
    if (sh_.phase.load(std::memory_order_acquire) == kClose) return;
    if (s.up) {
      s.up = false;
      sh_.connected.fetch_sub(1);
      ++stats.sse_dropped;
      ++stats.sse_reconnects;
      stats.problem("SSE " + s.session_id + " closed by server: " + std::string(why));
      s.cur_msg.clear();
      s.retry_ns = now + 200 * kMs;
      connect_q_.push_back(s.c.slot);
      return;
    }
    end_pending(s);
    ++stats.sse_connect_failures;
    retry_sse(s, now, std::string(why));
  }

  Shared& sh_;
  const Options& opt_;
  int tid_;
  Loop loop_;
  std::string host_;
  std::vector<std::unique_ptr<Sess>> sess_;
  std::vector<std::unique_ptr<Poster>> posters_;
  std::deque<std::uint32_t> connect_q_;
  std::deque<std::int64_t> post_q_;
  std::deque<std::pair<std::int64_t, std::uint32_t>> delayed_;  // (when, session) first chats
  std::deque<std::uint32_t> poster_q_;                           // POST connections to open up front
  int pending_ = 0;
  int connect_limit_ = 1;
};

// Waits until every SSE connection is up (or given up on), or the timeout.
bool wait_connected(Shared& sh, std::int64_t want, double timeout_s) {
  std::int64_t start = mono_ns(), deadline = start + static_cast<std::int64_t>(timeout_s * 1e9), last_log = start;
  while (mono_ns() < deadline) {
    std::int64_t up = sh.connected.load(), gone = sh.given_up.load();
    if (up + gone >= want && sh.posters_up.load() >= sh.posters_want.load()) return gone == 0;
    if (mono_ns() - last_log > 2 * kSec) {
      log("%lld/%lld SSE connections up, %lld given up, %lld/%lld POST connections open", static_cast<long long>(up),
          static_cast<long long>(want), static_cast<long long>(gone), static_cast<long long>(sh.posters_up.load()),
          static_cast<long long>(sh.posters_want.load()));
      last_log = mono_ns();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void add_common(JsonLine& j, Stats& st) {
  JsonLine ev;
  ev.integer("connected", static_cast<std::int64_t>(st.ev_connected))
      .integer("chunk", static_cast<std::int64_t>(st.ev_chunk))
      .integer("message_complete", static_cast<std::int64_t>(st.ev_complete))
      .integer("ping", static_cast<std::int64_t>(st.ev_ping))
      .integer("error", static_cast<std::int64_t>(st.ev_error))
      .integer("reset", static_cast<std::int64_t>(st.ev_reset))
      .integer("other", static_cast<std::int64_t>(st.ev_other));
  j.raw("events", ev.done());
  JsonLine sse;
  sse.integer("connect_failures", static_cast<std::int64_t>(st.sse_connect_failures))
      .integer("connect_timeouts", static_cast<std::int64_t>(st.sse_timeouts))
      .integer("dropped_by_server", static_cast<std::int64_t>(st.sse_dropped))
      .raw("http_status", status_json(st.sse_status));
  j.raw("sse", sse.done());
}

// CPU use over the measuring window in percent of one core: chatd, loadgen, and
// everything else on the machine (other work competing for the same cores).
void add_cpu(JsonLine& j, const Options& o, double srv0, double srv1, double self0, double self1, double all0,
             double all1) {
  double srv = !o.pids.empty() && srv0 >= 0 && srv1 >= 0 ? srv1 - srv0 : 0, self = self1 - self0, all = all1 - all0;
  JsonLine c;
  if (!o.pids.empty()) c.num("server", srv / o.seconds * 100, 1);
  c.num("loadgen", self / o.seconds * 100, 1)
      .num("machine", all / o.seconds * 100, 1)
      .num("others", !o.pids.empty() ? (all - srv - self) / o.seconds * 100 : -1, 1)
      .integer("cores", static_cast<std::int64_t>(std::thread::hardware_concurrency()));
  j.raw("cpu_percent", c.done());
}

int run_mode(Options opt) {
  Shared sh;
  sh.opt = std::move(opt);
  const Options& o = sh.opt;
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) workers.push_back(std::make_unique<Worker>(sh, t));

  JsonLine j;
  j.str("mode", o.mode).integer("threads", o.threads);
  long rss0 = !o.pids.empty() ? read_vmrss_kib(o.pids) : -1;
  long pss0 = !o.pids.empty() ? read_pss_kib(o.pids) : -1;
  std::vector<std::thread> threads;
  auto join = [&] {
    sh.phase.store(kClose, std::memory_order_release);
    for (auto& t : threads) t.join();
    threads.clear();
  };

  if (o.mode == "hold") {
    std::int64_t t0 = mono_ns();
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    bool all = wait_connected(sh, o.connections, o.connect_timeout);
    double connect_s = static_cast<double>(mono_ns() - t0) / 1e9;
    std::int64_t up = sh.connected.load();
    log("hold: %lld/%d connected in %.1f s", static_cast<long long>(up), o.connections, connect_s);
    std::int64_t held_from = mono_ns();
    sleep_until_ns(held_from + static_cast<std::int64_t>(std::min(o.settle, o.hold_seconds) * 1e9));
    long rss1 = !o.pids.empty() ? read_vmrss_kib(o.pids) : -1;
    sleep_until_ns(held_from + static_cast<std::int64_t>(o.hold_seconds * 1e9));
    long rss2 = !o.pids.empty() ? read_vmrss_kib(o.pids) : -1;
    long pss2 = !o.pids.empty() ? read_pss_kib(o.pids) : -1;
    std::int64_t up_end = sh.connected.load();
    join();
    long rss3 = -1;
    if (!o.pids.empty()) {
      std::this_thread::sleep_for(std::chrono::seconds(2));
      rss3 = read_vmrss_kib(o.pids);
    }
    Stats st;
    for (auto& w : workers) st.merge(w->stats);
    j.integer("connections_requested", o.connections)
        .integer("connected", up)
        .integer("connected_at_end", up_end)
        .boolean("all_connected", all && up_end == o.connections)
        .num("connect_seconds", connect_s)
        .num("connect_p50_ms", st.connect_lat.percentile_ms(50))
        .num("connect_p99_ms", st.connect_lat.percentile_ms(99))
        .num("connect_max_ms", st.connect_lat.max_ms())
        .num("hold_seconds", o.hold_seconds, 1);
    if (!o.pids.empty()) {
      j.integer("pss_before_kib", pss0).integer("pss_end_kib", pss2).num(
          "pss_per_conn_bytes",
          up_end > 0 && pss0 >= 0 && pss2 >= 0 ? static_cast<double>(pss2 - pss0) * 1024.0 / static_cast<double>(up_end)
                                               : -1,
          0);
      j.integer("rss_before_kib", rss0).integer("rss_settled_kib", rss1).integer("rss_end_kib", rss2).integer(
          "rss_after_close_kib", rss3);
      double per = up_end > 0 && rss0 >= 0 && rss2 >= 0 ? static_cast<double>(rss2 - rss0) * 1024.0 /
                                                               static_cast<double>(up_end)
                                                         : -1;
      j.num("rss_per_conn_bytes", per, 0);
    }
    add_common(j, st);
    j.raw("problems", problems_json(st.problems));
  } else if (o.mode == "stream") {
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    bool all = wait_connected(sh, o.sessions, o.connect_timeout);
    std::int64_t up = sh.connected.load();
    log("stream: %lld/%d SSE connected; posting for %.1f s warm-up + %.1f s measured", static_cast<long long>(up),
        o.sessions, o.warmup, o.seconds);
    std::int64_t t_run = mono_ns();
    sh.window_start_ns = t_run + static_cast<std::int64_t>(o.warmup * 1e9);
    sh.window_end_ns = sh.window_start_ns + static_cast<std::int64_t>(o.seconds * 1e9);
    // Workers see kRun and queue a post for every connected session.
    sh.phase.store(kRun, std::memory_order_release);
    sleep_until_ns(sh.window_start_ns);
    double cpu0 = !o.pids.empty() ? read_cpu_seconds(o.pids) : -1, self0 = self_cpu_seconds(), all0 = machine_busy_seconds();
    sleep_until_ns(sh.window_end_ns);
    double cpu1 = !o.pids.empty() ? read_cpu_seconds(o.pids) : -1, self1 = self_cpu_seconds(), all1 = machine_busy_seconds();
    long rss_run = !o.pids.empty() ? read_vmrss_kib(o.pids) : -1;
    sh.phase.store(kDrain, std::memory_order_release);
    std::int64_t drain_start = mono_ns();
    std::int64_t drain_deadline = drain_start + static_cast<std::int64_t>(o.drain * 1e9);
    while (mono_ns() < drain_deadline && sh.busy.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    double drain_s = static_cast<double>(mono_ns() - drain_start) / 1e9;
    std::int64_t unfinished = sh.busy.load();
    std::int64_t up_end = sh.connected.load();
    join();
    Stats st;
    std::vector<std::string> stuck;
    for (auto& w : workers) {
      st.merge(w->stats);
      for (auto& u : w->unfinished(5)) stuck.push_back(u);
    }
    double rate = static_cast<double>(st.chunks_window) / o.seconds;
    j.integer("sessions", o.sessions)
        .integer("connected", up)
        .integer("connected_at_end", up_end)
        .boolean("all_connected", all)
        .num("warmup_seconds", o.warmup, 1)
        .num("seconds", o.seconds, 1)
        .integer("chunk_events_window", static_cast<std::int64_t>(st.chunks_window))
        .integer("duplicate_chunk_events_window", static_cast<std::int64_t>(st.dups_window))
        .num("chunk_events_per_sec", rate, 1)
        .integer("messages_completed_window", static_cast<std::int64_t>(st.completes_window))
        .num("messages_per_sec", static_cast<double>(st.completes_window) / o.seconds, 1)
        .num("chunks_per_message",
             st.ev_complete ? static_cast<double>(st.ev_chunk) / static_cast<double>(st.ev_complete) : 0, 2)
        .num("latency_p50_ms", st.chunk_lat.percentile_ms(50))
        .num("latency_p90_ms", st.chunk_lat.percentile_ms(90))
        .num("latency_p99_ms", st.chunk_lat.percentile_ms(99))
        .num("latency_p999_ms", st.chunk_lat.percentile_ms(99.9))
        .num("latency_max_ms", st.chunk_lat.max_ms())
        .num("latency_mean_ms", st.chunk_lat.mean_ms())
        .num("latency_min_ms", st.chunk_lat.min_ms())
        .integer("latency_samples", static_cast<std::int64_t>(st.chunk_lat.size()))
        .integer("latency_negative", static_cast<std::int64_t>(st.chunk_lat.negative()))
        .num("message_latency_p50_ms", st.message_lat.percentile_ms(50))
        .num("message_latency_p99_ms", st.message_lat.percentile_ms(99))
        .integer("posts_ok", static_cast<std::int64_t>(st.posts_ok))
        .integer("post_errors", static_cast<std::int64_t>(st.post_errors))
        .raw("post_status", status_json(st.post_status))
        .num("post_latency_p50_ms", st.post_lat.percentile_ms(50))
        .num("post_latency_p99_ms", st.post_lat.percentile_ms(99))
        .num("post_queue_wait_p99_ms", st.queue_wait.percentile_ms(99))
        .integer("post_connections_opened", static_cast<std::int64_t>(st.post_reconnects))
        .integer("posts_over_1s_new_conn", static_cast<std::int64_t>(st.slow_posts_fresh))
        .integer("posts_over_1s_reused_conn", static_cast<std::int64_t>(st.slow_posts_reused))
        .num("stagger_seconds", o.stagger, 1)
        .integer("post_conns", o.post_conns > 0 ? o.post_conns * o.threads : o.sessions);
    JsonLine integrity;
    integrity.integer("gaps", static_cast<std::int64_t>(st.order_gaps))
        .integer("duplicates", static_cast<std::int64_t>(st.order_dups))
        .integer("bad_chunk_json", static_cast<std::int64_t>(st.bad_chunk))
        .integer("bad_timestamp", static_cast<std::int64_t>(st.bad_timestamp))
        .integer("event_id_mismatch", static_cast<std::int64_t>(st.id_mismatch))
        .integer("complete_without_final", static_cast<std::int64_t>(st.complete_without_final))
        .integer("stalls", static_cast<std::int64_t>(st.stalls))
        .integer("unfinished_after_drain", unfinished)
        .num("drain_seconds", drain_s, 2);
    j.raw("integrity", integrity.done());
    if (!o.pids.empty()) {
      j.integer("server_rss_kib", rss_run);
    }
    add_cpu(j, o, cpu0, cpu1, self0, self1, all0, all1);
    add_common(j, st);
    j.raw("unfinished_sample", problems_json(stuck));
    j.raw("problems", problems_json(st.problems));
  } else {  // post
    std::int64_t t_run = mono_ns();
    sh.window_start_ns = t_run + static_cast<std::int64_t>(o.warmup * 1e9);
    sh.window_end_ns = sh.window_start_ns + static_cast<std::int64_t>(o.seconds * 1e9);
    sh.phase.store(kRun, std::memory_order_release);
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    sleep_until_ns(sh.window_start_ns);
    double cpu0 = !o.pids.empty() ? read_cpu_seconds(o.pids) : -1, self0 = self_cpu_seconds(), all0 = machine_busy_seconds();
    sleep_until_ns(sh.window_end_ns);
    double cpu1 = !o.pids.empty() ? read_cpu_seconds(o.pids) : -1, self1 = self_cpu_seconds(), all1 = machine_busy_seconds();
    // Let the last requests answer (bounded), then stop.
    sleep_until_ns(mono_ns() + 500 * kMs);
    join();
    Stats st;
    for (auto& w : workers) st.merge(w->stats);
    j.integer("concurrency", o.concurrency)
        .num("warmup_seconds", o.warmup, 1)
        .num("seconds", o.seconds, 1)
        .integer("requests_ok_window", static_cast<std::int64_t>(st.posts_ok_window))
        .num("post_rps", static_cast<double>(st.posts_ok_window) / o.seconds, 1)
        .integer("requests_ok", static_cast<std::int64_t>(st.posts_ok))
        .integer("errors", static_cast<std::int64_t>(st.post_errors))
        .integer("connection_errors", static_cast<std::int64_t>(st.post_conn_errors))
        .integer("connections_opened", static_cast<std::int64_t>(st.post_reconnects))
        .raw("status", status_json(st.post_status))
        .integer("posts_over_1s_new_conn", static_cast<std::int64_t>(st.slow_posts_fresh))
        .integer("posts_over_1s_reused_conn", static_cast<std::int64_t>(st.slow_posts_reused))
        .num("latency_p50_ms", st.post_lat.percentile_ms(50))
        .num("latency_p99_ms", st.post_lat.percentile_ms(99))
        .num("latency_max_ms", st.post_lat.max_ms())
        .integer("latency_samples", static_cast<std::int64_t>(st.post_lat.size()));
    add_cpu(j, o, cpu0, cpu1, self0, self1, all0, all1);
    j.raw("problems", problems_json(st.problems));
  }
  std::printf("%s\n", j.done().c_str());
  std::fflush(stdout);
  return 0;
}

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "loadgen: %s\n\n", why);
  std::fprintf(stderr,
               "usage: loadgen hold|stream|post --port P [options]\n"
               "  hold:   --connections N --hold-seconds S [--settle S] [--pid PID]\n"
               "          N idle SSE connections (one session each); RSS of PID per connection\n"
               "  stream: --sessions N --seconds S [--warmup S] [--drain S] [--post-conns N per thread (0: one per session)]\n"
               "          [--stagger S (spread first chats over S s)] [--pid PID]\n"
               "          one SSE per session, a new chat per session as soon as the last completes;\n"
               "          chunk events/s and chunk latency (timestamp field to receipt)\n"
               "  post:   --seconds S --concurrency C [--warmup S]\n"
               "          POST /api/chat on C keep-alive connections, a new session each time\n"
               "  common: --threads T (2) --batch N (256 connects at once) --connect-timeout S (120)\n"
               "          --sse-path TEMPLATE ({session}, {user}; chatd's /api/sse by default)\n"
               "          --ready connected|headers (a stream is up at chatd's connected event, or at its 200)\n"
               "          --pid PID[,PID...] (the server's processes: RSS, PSS and CPU summed over them)\n"
               "          --prefix ID --user ID --message TEXT --stall-seconds S (5)\n"
               "also: loadgen fanout ... (chunks through chatd or nchan), loadgen natshop ... (the NATS hop alone)\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage(nullptr);
  Options o;
  o.mode = argv[1];
  if (o.mode != "hold" && o.mode != "stream" && o.mode != "post") usage("unknown mode");
  o.prefix = "b" + std::to_string(real_us() / 1000 % 100'000'000);
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") usage(nullptr);
    if (i + 1 >= argc) usage(("missing value for " + k).c_str());
    std::string v = argv[++i];
    auto num = [&](double lo, double hi) {
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end || d < lo || d > hi) usage(("bad value for " + k + ": " + v).c_str());
      return d;
    };
    if (k == "--port") o.port = static_cast<std::uint16_t>(num(1, 65535));
    else if (k == "--threads") o.threads = static_cast<int>(num(1, 64));
    else if (k == "--connections") o.connections = static_cast<int>(num(1, 1'000'000));
    else if (k == "--sessions") o.sessions = static_cast<int>(num(1, 1'000'000));
    else if (k == "--seconds") o.seconds = num(0.1, 86400);
    else if (k == "--hold-seconds") o.hold_seconds = num(0, 86400);
    else if (k == "--warmup") o.warmup = num(0, 3600);
    else if (k == "--drain") o.drain = num(0, 3600);
    else if (k == "--settle") o.settle = num(0, 3600);
    else if (k == "--concurrency") o.concurrency = static_cast<int>(num(1, 100'000));
    else if (k == "--post-conns") o.post_conns = static_cast<int>(num(1, 10'000));
    else if (k == "--stagger") o.stagger = num(0, 3600);
    else if (k == "--batch") o.batch = static_cast<int>(num(1, 100'000));
    else if (k == "--connect-timeout") o.connect_timeout = num(1, 86400);
    else if (k == "--stall-seconds") o.stall_seconds = num(0.1, 3600);
    else if (k == "--max-attempts") o.max_attempts = static_cast<int>(num(1, 1000));
    else if (k == "--pid") o.pids = parse_pids(v);
    else if (k == "--prefix") o.prefix = v;
    else if (k == "--user") o.user = v;
    else if (k == "--message") o.message = v;
    else if (k == "--sse-path") o.sse_path = v;
    else if (k == "--ready") {
      if (v != "headers" && v != "connected") usage("--ready takes headers or connected");
      o.ready_on_headers = v == "headers";
    }
    else usage(("unknown option " + k).c_str());
  }
  if (o.mode == "post" && o.concurrency < o.threads) o.threads = o.concurrency;
  return o;
}

}  // namespace
}  // namespace lg

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (argc >= 2 && std::string_view(argv[1]) == "fanout") return lg::fanout_main(argc, argv);
  if (argc >= 2 && std::string_view(argv[1]) == "natshop") return lg::nats_hop_main(argc, argv);
  lg::Options o = lg::parse(argc, argv);
  getrlimit(RLIMIT_NOFILE, &rl);
  long need = (o.mode == "hold" ? o.connections : o.mode == "stream" ? o.sessions : 0) +
              (o.mode == "post" ? o.concurrency : o.post_conns > 0 ? o.post_conns * o.threads : o.sessions) + 32;
  if (static_cast<long>(rl.rlim_cur) < need) {
    std::fprintf(stderr, "loadgen: needs about %ld descriptors, RLIMIT_NOFILE is %ld\n", need,
                 static_cast<long>(rl.rlim_cur));
    return 1;
  }
  return lg::run_mode(std::move(o));
}
