// loadgen natshop --nats-port N [--rate R] [--seconds S] [--warmup W] [--send-asap 0|1]
//                 [--event-loop 0|1]
//
// One nats.c connection publishes R messages/s on one subject, each carrying the monotonic
// time taken right before the publish (as `loadgen fanout` stamps a chunk); a second connection
// subscribes as a pod does (nats.c's delivery thread runs the callback) and records, on
// receipt, now minus that time. No chatd: what is left is the publisher, nats-server and
// nats.c's reader and delivery threads on this machine. Prints one JSON line with the
// percentiles of the measured window.

#include "nats_hop.hpp"

#include <nats/nats.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include <sys/epoll.h>
#include <unistd.h>

#include "util.hpp"

namespace lg {
namespace {

constexpr const char* kSubject = "bench.natshop";

struct HopOptions {
  int nats_port = 4222;
  double rate = 10'000;
  double seconds = 10;
  double warmup = 3;
  bool send_asap = true;
  bool event_loop = false;
};

[[noreturn]] void hop_usage(const char* why) {
  if (why) std::fprintf(stderr, "loadgen natshop: %s\n\n", why);
  std::fprintf(stderr,
               "usage: loadgen natshop --nats-port N [--rate R (10000)] [--seconds S (10)] [--warmup S (3)]\n"
               "                       [--send-asap 0|1 (1)] [--event-loop 0|1 (0)]\n");
  std::exit(2);
}

HopOptions parse_hop(int argc, char** argv) {
  HopOptions o;
  for (int i = 2; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 >= argc) hop_usage(("missing value for " + k).c_str());
    char* end = nullptr;
    const double v = std::strtod(argv[i + 1], &end);
    if (end == argv[i + 1] || *end || v < 0) hop_usage(("bad value for " + k).c_str());
    if (k == "--nats-port" && v >= 1 && v <= 65535) o.nats_port = static_cast<int>(v);
    else if (k == "--rate" && v >= 1 && v <= 1e6) o.rate = v;
    else if (k == "--seconds" && v >= 1 && v <= 3600) o.seconds = v;
    else if (k == "--warmup" && v <= 600) o.warmup = v;
    else if (k == "--send-asap" && (v == 0 || v == 1)) o.send_asap = v == 1;
    else if (k == "--event-loop" && (v == 0 || v == 1)) o.event_loop = v == 1;
    else hop_usage(("unknown option or value out of range: " + k).c_str());
  }
  return o;
}

struct Received {
  std::mutex mutex;  // the delivery thread adds, main reads at the end
  Samples window;
  std::atomic<std::int64_t> window_start{0}, window_end{0};
  std::atomic<std::uint64_t> count{0};
};

void on_message(natsConnection*, natsSubscription*, natsMsg* m, void* closure) {
  const std::int64_t now = mono_ns();
  auto* r = static_cast<Received*>(closure);
  std::int64_t sent = 0;
  if (natsMsg_GetDataLength(m) == static_cast<int>(sizeof sent)) std::memcpy(&sent, natsMsg_GetData(m), sizeof sent);
  natsMsg_Destroy(m);
  r->count.fetch_add(1, std::memory_order_relaxed);
  if (sent < r->window_start.load(std::memory_order_relaxed) || sent >= r->window_end.load(std::memory_order_relaxed))
    return;
  std::lock_guard lock(r->mutex);
  r->window.add((now - sent) / 1000);
}

// --event-loop 1: the subscriber's connection reads on a thread of ours (nats.c's external
// event loop), its subscription synchronous and drained right after each read, so a message
// reaches the callback with no hand-off from nats.c's reader thread to a delivery thread.
struct EpollLoop {
  int epoll = epoll_create1(EPOLL_CLOEXEC);
  std::mutex mutex;  // nats.c's threads attach and change the interest; the loop thread reads `nc`
  int fd = -1;
  bool writing = false;
  natsConnection* nc = nullptr;
  std::atomic<natsSubscription*> sub{nullptr};
  std::atomic<bool> stopping{false};

  ~EpollLoop() { close(epoll); }

  void update_locked() {
    if (fd < 0) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (writing ? EPOLLOUT : 0u);
    ev.data.fd = fd;
    if (epoll_ctl(epoll, EPOLL_CTL_MOD, fd, &ev) != 0) epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev);
  }

  void run(Received& received) {
    epoll_event events[4];
    while (!stopping.load()) {
      const int n = epoll_wait(epoll, events, 4, 50);
      natsConnection* c = nullptr;
      {
        std::lock_guard lock(mutex);
        c = nc;
      }
      for (int i = 0; i < n && c; ++i) {
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) natsConnection_ProcessReadEvent(c);
        if (events[i].events & EPOLLOUT) natsConnection_ProcessWriteEvent(c);
      }
      natsSubscription* s = sub.load();
      int pending = 0;
      while (s && natsSubscription_GetPending(s, &pending, nullptr) == NATS_OK && pending > 0) {
        natsMsg* m = nullptr;
        if (natsSubscription_NextMsg(&m, s, 1) != NATS_OK) break;
        on_message(nullptr, s, m, &received);
      }
    }
  }
};

natsStatus loop_attach(void** user, void* loop, natsConnection* nc, natsSock socket) {
  auto* l = static_cast<EpollLoop*>(loop);
  std::lock_guard lock(l->mutex);
  l->nc = nc;
  l->fd = socket;
  l->writing = false;
  l->update_locked();
  *user = l;
  return NATS_OK;
}
natsStatus loop_read(void*, bool) { return NATS_OK; }
natsStatus loop_write(void* user, bool add) {
  auto* l = static_cast<EpollLoop*>(user);
  std::lock_guard lock(l->mutex);
  l->writing = add;
  l->update_locked();
  return NATS_OK;
}
natsStatus loop_detach(void* user) {
  auto* l = static_cast<EpollLoop*>(user);
  std::lock_guard lock(l->mutex);
  l->fd = -1;
  return NATS_OK;
}

natsConnection* connect(const HopOptions& o, bool send_asap, EpollLoop* loop = nullptr) {
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  const std::string url = "nats://127.0.0.1:" + std::to_string(o.nats_port);
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, send_asap);
  if (s == NATS_OK && loop)
    s = natsOptions_SetEventLoop(opts, loop, loop_attach, loop_read, loop_write, loop_detach);
  if (s == NATS_OK) s = natsConnection_Connect(&nc, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    std::fprintf(stderr, "loadgen natshop: cannot connect to %s: %s\n", url.c_str(), natsStatus_GetText(s));
    std::exit(1);
  }
  return nc;
}

}  // namespace

int nats_hop_main(int argc, char** argv) {
  const HopOptions o = parse_hop(argc, argv);
  Received received;
  EpollLoop loop;
  std::thread loop_thread;
  if (o.event_loop) loop_thread = std::thread([&] { loop.run(received); });
  natsConnection* sub_nc = connect(o, false, o.event_loop ? &loop : nullptr);
  natsConnection* pub_nc = connect(o, o.send_asap);
  natsSubscription* sub = nullptr;
  const natsStatus subscribed = o.event_loop ? natsConnection_SubscribeSync(&sub, sub_nc, kSubject)
                                             : natsConnection_Subscribe(&sub, sub_nc, kSubject, on_message, &received);
  if (subscribed != NATS_OK || natsConnection_Flush(sub_nc) != NATS_OK) {
    std::fprintf(stderr, "loadgen natshop: cannot subscribe\n");
    return 1;
  }
  if (o.event_loop) loop.sub = sub;
  const std::int64_t start = mono_ns();
  received.window_start = start + static_cast<std::int64_t>(o.warmup * 1e9);
  received.window_end = received.window_start + static_cast<std::int64_t>(o.seconds * 1e9);
  const double cpu0 = machine_busy_seconds();
  std::uint64_t published = 0, failed = 0;
  while (true) {
    const std::int64_t now = mono_ns();
    if (now >= received.window_end) break;
    const auto due = static_cast<std::uint64_t>(static_cast<double>(now - start) / 1e9 * o.rate);
    for (; published < due; ++published) {
      const std::int64_t stamp = mono_ns();
      if (natsConnection_Publish(pub_nc, kSubject, &stamp, sizeof stamp) != NATS_OK) ++failed;
    }
    // As `loadgen fanout` does (its loop polls for 1 ms): the publishes of a millisecond go together.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double cpu1 = machine_busy_seconds();
  const double elapsed = static_cast<double>(mono_ns() - start) / 1e9;
  natsConnection_Flush(pub_nc);
  const std::int64_t drain_until = mono_ns() + 5'000'000'000;
  while (received.count.load() < published - failed && mono_ns() < drain_until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));

  std::lock_guard lock(received.mutex);
  Samples& w = received.window;
  JsonLine j;
  j.str("mode", "natshop")
      .num("rate_requested", o.rate, 0)
      .boolean("send_asap", o.send_asap)
      .boolean("event_loop", o.event_loop)
      .num("seconds", o.seconds, 1)
      .integer("published", static_cast<std::int64_t>(published))
      .integer("publish_failed", static_cast<std::int64_t>(failed))
      .integer("received", static_cast<std::int64_t>(received.count.load()))
      .integer("latency_samples", static_cast<std::int64_t>(w.size()))
      .num("latency_p50_ms", w.percentile_ms(50))
      .num("latency_p99_ms", w.percentile_ms(99))
      .num("latency_p999_ms", w.percentile_ms(99.9))
      .num("latency_max_ms", w.max_ms())
      .num("machine_cpu_percent", (cpu1 - cpu0) / elapsed * 100, 1);
  std::printf("%s\n", j.done().c_str());
  loop.stopping = true;
  if (loop_thread.joinable()) loop_thread.join();
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(pub_nc);
  natsConnection_Destroy(sub_nc);
  nats_Close();
  return w.size() > 0 && received.count.load() == published - failed ? 0 : 1;
}

}  // namespace lg
