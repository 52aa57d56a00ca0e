#include "limits/admission.hpp"

#include "common/identifier.hpp"

namespace chat::limits {
namespace {

std::string streams_key(const std::string& user) { return "streams:" + user; }

}  // namespace

Admission::Admission(Limiter& limiter, Policy policy, TrustedProxies proxies)
    : limiter_(limiter), policy_(policy), proxies_(std::move(proxies)) {
  streams_->limiter = &limiter_;
}

Admission::~Admission() {
  renewal_.reset();  // a wait still queued runs with operation_aborted and touches nothing
  std::lock_guard lock(streams_->mutex);
  streams_->limiter = nullptr;
}

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
                counted(Limit::ip, on_caller(std::move(done))));
}

void Admission::chat(const std::string& user, VerdictCallback done) {
  limiter_.take("chat:" + user, policy_.chats, counted(Limit::chat, on_caller(std::move(done))));
}

void Admission::chat_refused(const std::string& user) { limiter_.give_back("chat:" + user, policy_.chats); }

void Admission::reply_starts(const std::string& user, const std::string& message_id, VerdictCallback done) {
  if (policy_.running_replies == 0) return done({});
  {
    std::lock_guard lock(mutex_);
    running_.emplace(message_id, user);
  }
  limiter_.hold("running:" + user, message_id, policy_.running_replies, policy_.running_ttl,
                counted(Limit::running_replies, [this, message_id, done = on_caller(std::move(done))](Verdict v) {
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

void Admission::stream_opens(const std::string& user, TicketCallback done) {
  static int nothing;  // what a ticket points at: it owns nothing, it is only not null
  // An unlimited stream's ticket shares no ownership (the aliasing
  // constructor): an idle stream should not carry a control block for it.
  if (policy_.streams_per_user == 0) return done(StreamTicket(StreamTicket{}, &nothing));
  auto place = new_identifier("stream_");
  {
    std::lock_guard lock(streams_->mutex);
    streams_->users.emplace(place, user);  // renewed from now on, refused or not: the verdict erases it
  }
  limiter_.hold(streams_key(user), place, policy_.streams_per_user, policy_.stream_ttl,
                counted(Limit::streams, [streams = streams_, user, place, done = on_caller(std::move(done))](Verdict v) {
                  if (!v.allowed) {
                    // Erased before the answer goes on, so no later renewal holds it; and
                    // given back, for one may have while the refusal was on its way (a
                    // place had come free): no ticket would ever release it.
                    std::lock_guard lock(streams->mutex);
                    streams->users.erase(place);
                    if (streams->limiter) streams->limiter->release(streams_key(user), place);
                    return done(nullptr);
                  }
                  done(StreamTicket(&nothing, [streams, user, place](void*) {
                    std::lock_guard lock(streams->mutex);
                    streams->users.erase(place);
                    if (streams->limiter) streams->limiter->release(streams_key(user), place);
                  }));
                }));
}

// A renewal is let in again as a member already in; its verdict is moot (the
// stream is open either way). Issued under the lock that a ticket's release
// takes too, so a renewal never follows the release of its place (the
// limiter carries out one caller's calls in order) and brings it back.
void Admission::renew_streams() {
  std::lock_guard lock(streams_->mutex);
  for (const auto& [place, user] : streams_->users)
    limiter_.hold(streams_key(user), place, policy_.streams_per_user, policy_.stream_ttl, [](Verdict) {});
}

void Admission::start(boost::asio::any_io_executor executor) {
  verdicts_ = executor;
  if (policy_.streams_per_user == 0) return;
  renewal_ = std::make_unique<boost::asio::steady_timer>(std::move(executor));
  schedule_renewal();
}

void Admission::schedule_renewal() {
  renewal_->expires_after(policy_.stream_ttl / 3);
  renewal_->async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    renew_streams();
    schedule_renewal();
  });
}

}  // namespace chat::limits
