#pragma once
// The pod's admission limits in one place (docs/SECURITY.md#limits): requests
// per client address, chats per user, replies running per user (these three on
// the Limiter, so across pods with Redis), and open streams per user on this
// pod. Every refusal is counted by limit; the HTTP layer answers it with 429,
// Retry-After and the JSON error `rate_limited`.

#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <memory>
#include <mutex>
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
};

class Admission {
 public:
  Admission(Limiter& limiter, Policy policy, TrustedProxies proxies);

  // One request from the client behind `peer` (and X-Forwarded-For when the
  // peer is a trusted proxy).
  void request(const boost::asio::ip::address& peer, std::string_view forwarded_for, VerdictCallback done);
  // One chat posted by `user`.
  void chat(const std::string& user, VerdictCallback done);
  // A reply about to be generated for `user`; reply_ended frees its place
  // (a no-op for a reply this pod did not admit).
  void reply_starts(const std::string& user, const std::string& message_id, VerdictCallback done);
  void reply_ended(const std::string& message_id);
  // A stream `user` opens on this pod: a ticket to keep while it is open, or
  // null when the user has streams_per_user open here.
  std::shared_ptr<void> stream_opens(const std::string& user);

  const TrustedProxies& proxies() const { return proxies_; }
  const LimitMetrics& metrics() const { return metrics_; }
  LimitMetrics& metrics() { return metrics_; }
  ComponentStatus status() const { return limiter_.status(); }

 private:
  VerdictCallback counted(Limit limit, VerdictCallback done);

  Limiter& limiter_;
  Policy policy_;
  TrustedProxies proxies_;
  LimitMetrics metrics_;
  // Open streams per user here. Shared with the tickets: a stream's ticket can
  // be released after the Admission is gone (its last handler is destroyed with
  // the io_context, at the very end of the program).
  struct StreamCounts {
    std::mutex mutex;  // guards open: streams open and close on every thread
    std::unordered_map<std::string, std::uint32_t> open;
  };

  std::mutex mutex_;  // guards running_: decided on HTTP, bus and store threads
  std::unordered_map<std::string, std::string> running_;  // message id -> user, replies admitted here
  std::shared_ptr<StreamCounts> streams_ = std::make_shared<StreamCounts>();
};

}  // namespace chat::limits
