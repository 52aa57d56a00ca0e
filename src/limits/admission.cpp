#include "limits/admission.hpp"

namespace chat::limits {

Admission::Admission(Limiter& limiter, Policy policy, TrustedProxies proxies)
    : limiter_(limiter), policy_(policy), proxies_(std::move(proxies)) {}

VerdictCallback Admission::counted(Limit limit, VerdictCallback done) {
  return [this, limit, done = std::move(done)](Verdict v) {
    if (!v.allowed) metrics_.count(limit);
    if (v.undecided) metrics_.undecided.add();
    done(v);
  };
}

void Admission::request(const boost::asio::ip::address& peer, std::string_view forwarded_for, VerdictCallback done) {
  if (policy_.per_address.off()) return done({});
  limiter_.take("ip:" + proxies_.client_of(peer, forwarded_for), policy_.per_address,
                counted(Limit::ip, std::move(done)));
}

void Admission::chat(const std::string& user, VerdictCallback done) {
  limiter_.take("chat:" + user, policy_.chats, counted(Limit::chat, std::move(done)));
}

void Admission::reply_starts(const std::string& user, const std::string& message_id, VerdictCallback done) {
  if (policy_.running_replies == 0) return done({});
  {
    std::lock_guard lock(mutex_);
    running_.emplace(message_id, user);
  }
  limiter_.hold("running:" + user, message_id, policy_.running_replies, policy_.running_ttl,
                counted(Limit::running_replies, [this, message_id, done = std::move(done)](Verdict v) {
                  if (!v.allowed) {
                    std::lock_guard lock(mutex_);
                    running_.erase(message_id);
                  }
                  done(v);
                }));
}

void Admission::reply_ended(const std::string& message_id) {
  std::string user;
  {
    std::lock_guard lock(mutex_);
    auto it = running_.find(message_id);
    if (it == running_.end()) return;
    user = std::move(it->second);
    running_.erase(it);
  }
  limiter_.release("running:" + user, message_id);
}

std::shared_ptr<void> Admission::stream_opens(const std::string& user) {
  static int ticket;  // a ticket that owns nothing
  if (policy_.streams_per_user == 0) return std::shared_ptr<void>(&ticket, [](void*) {});
  {
    std::lock_guard lock(streams_->mutex);
    auto& n = streams_->open[user];
    if (n >= policy_.streams_per_user) {
      metrics_.count(Limit::streams);
      return nullptr;
    }
    ++n;
  }
  return std::shared_ptr<void>(&ticket, [counts = streams_, user](void*) {
    std::lock_guard lock(counts->mutex);
    auto it = counts->open.find(user);
    if (it != counts->open.end() && --it->second == 0) counts->open.erase(it);
  });
}

}  // namespace chat::limits
