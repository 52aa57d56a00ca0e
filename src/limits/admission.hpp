#pragma once
// The pod's admission limits in one place (docs/SECURITY.md#limits): requests
// per client address, chats per user, replies running per user and open
// streams per user, all on the Limiter, so across pods with Redis. Every
// refusal is counted by limit; the HTTP layer answers it with 429, Retry-After
// and the JSON error `rate_limited`.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "limits/client_address.hpp"
#include "limits/limiter.hpp"

namespace chat::limits {

struct Policy {
  Rate per_address;  // every request but the probes
  Rate chats;        // POST /api/chat, per user
  std::uint32_t running_replies = 0;
  std::uint32_t streams_per_user = 0;
  // A running reply whose end this pod never saw (it died) frees its place after this.
  std::chrono::milliseconds running_ttl{10 * 60'000};
  // An open stream's place, renewed every third of it: a pod that died frees
  // its streams' places after this.
  std::chrono::milliseconds stream_ttl{30'000};
};

// Kept by an open stream; its place is freed when the last copy goes.
using StreamTicket = std::shared_ptr<void>;
using TicketCallback = std::function<void(StreamTicket)>;

class Admission {
 public:
  Admission(Limiter& limiter, Policy policy, TrustedProxies proxies);
  // Run renewals no more; tickets still held release nothing after this.
  ~Admission();

  // One request from the client behind `peer` (and X-Forwarded-For when the
  // peer is a trusted proxy).
  void request(const boost::asio::ip::address& peer, std::string_view forwarded_for, VerdictCallback done);
  // One chat posted by `user`.
  void chat(const std::string& user, VerdictCallback done);
  // A chat let through by chat() that the pod then refused: it does not count.
  void chat_refused(const std::string& user);
  // A reply about to be generated for `user`; reply_ended frees its place
  // (a no-op for a reply this pod did not admit).
  void reply_starts(const std::string& user, const std::string& message_id, VerdictCallback done);
  void reply_ended(const std::string& message_id);
  // A stream `user` opens: `done` gets a ticket to keep while it is open, or
  // null when the user already has streams_per_user open (on all pods that
  // share the limiter).
  void stream_opens(const std::string& user, TicketCallback done);
  // Renews the places of the streams open here (any thread).
  void renew_streams();
  // From now on every verdict reaches its caller on `executor` (dispatched:
  // inline when the limiter answered on one of its threads, as the memory
  // limiter does), not on a limiter's own thread, where the callers' work
  // (routing, parsing, the chat's submit) would run, all of it on one thread;
  // and renew_streams() runs every stream_ttl / 3 on it. The executor's
  // threads must be stopped, and the limiter stopped, before the Admission is
  // destroyed.
  void start(boost::asio::any_io_executor executor);

  const TrustedProxies& proxies() const { return proxies_; }
  const LimitMetrics& metrics() const { return metrics_; }
  LimitMetrics& metrics() { return metrics_; }
  ComponentStatus status() const { return limiter_.status(); }

 private:
  VerdictCallback counted(Limit limit, VerdictCallback done);
  // `done`, run on the executor start() named: the limiter's own bookkeeping
  // (running_, the open streams) is done where the verdict arrives, the
  // caller's work there.
  template <class... Args>
  std::function<void(Args...)> on_caller(std::function<void(Args...)> done) const {
    if (!verdicts_) return done;
    return [executor = *verdicts_, done = std::move(done)](Args... args) {
      boost::asio::dispatch(executor, [done, args...] { done(args...); });
    };
  }

  Limiter& limiter_;
  Policy policy_;
  TrustedProxies proxies_;
  LimitMetrics metrics_;
  // The streams open here, by their place in the limiter. Shared with the
  // tickets: a stream's ticket can be released after the Admission is gone
  // (its last handler is destroyed with the io_context, at the very end).
  struct OpenStreams {
    std::mutex mutex;  // guards both: streams open and close on every thread
    std::unordered_map<std::string, std::string> users;  // place (member) -> user
    Limiter* limiter = nullptr;                           // null once the Admission is gone
  };
  void schedule_renewal();

  std::mutex mutex_;  // guards running_: decided on HTTP, bus and store threads
  std::unordered_map<std::string, std::string> running_;  // message id -> user, replies admitted here
  std::shared_ptr<OpenStreams> streams_ = std::make_shared<OpenStreams>();
  std::unique_ptr<boost::asio::steady_timer> renewal_;
  std::optional<boost::asio::any_io_executor> verdicts_;  // set once by start(), before any request
};

}  // namespace chat::limits
