// Admission: the pod's limits on one limiter, counted by limit; and who a
// request comes from (TrustedProxies), and connections per address.

#include <gtest/gtest.h>

#include <functional>
#include <utility>
#include <vector>

#include "http/address_connections.hpp"
#include "limits/admission.hpp"
#include "limits/client_address.hpp"
#include "limits/memory_limiter.hpp"

namespace chat::limits {
namespace {

namespace ip = boost::asio::ip;

TrustedProxies proxies(std::string_view list) {
  std::string error;
  auto p = TrustedProxies::parse(list, error);
  EXPECT_TRUE(p) << error;
  return p ? *p : TrustedProxies{};
}

bool allowed(std::function<void(VerdictCallback)> ask) {
  bool result = false;
  ask([&](Verdict v) { result = v.allowed; });
  return result;
}

StreamTicket open_stream(Admission& a, const std::string& user) {
  StreamTicket ticket;
  a.stream_opens(user, [&](StreamTicket t) { ticket = std::move(t); });  // the memory limiter answers inline
  return ticket;
}

Policy streams_only(std::uint32_t streams) {
  Policy p{{0, 1}, {0, 1}, 0, streams, std::chrono::minutes(1)};
  p.stream_ttl = std::chrono::milliseconds(300);
  return p;
}

// Two pods on one limiter (Redis in production): the streams of a user count together.
TEST(AdmissionStreams, TheCapHoldsForAllPodsThatShareTheLimiter) {
  MemoryLimiter shared;
  Admission pod_a(shared, streams_only(2), proxies("")), pod_b(shared, streams_only(2), proxies(""));
  auto on_a = open_stream(pod_a, "u1");
  auto on_b = open_stream(pod_b, "u1");
  ASSERT_TRUE(on_a && on_b);
  EXPECT_FALSE(open_stream(pod_a, "u1"));
  EXPECT_FALSE(open_stream(pod_b, "u1"));
  EXPECT_TRUE(open_stream(pod_b, "u2")) << "another user is not affected";
  on_b.reset();
  EXPECT_TRUE(open_stream(pod_a, "u1")) << "a stream closed on one pod frees a place on the other";
  EXPECT_EQ(pod_a.metrics().refused[static_cast<std::size_t>(Limit::streams)].value(), 1u);
}

// A pod that dies keeps no place for good: its places expire unless renewed.
TEST(AdmissionStreams, OpenStreamsKeepTheirPlacesOnlyWhileRenewed) {
  auto now = std::chrono::steady_clock::time_point{};
  MemoryLimiter shared([&] { return now; });
  Admission live(shared, streams_only(1), proxies("")), other(shared, streams_only(1), proxies(""));
  auto ticket = open_stream(live, "u1");
  ASSERT_TRUE(ticket);
  for (int i = 0; i < 5; ++i) {
    now += std::chrono::milliseconds(200);  // two thirds of the ttl
    live.renew_streams();
    EXPECT_FALSE(open_stream(other, "u1")) << "renewed places stay taken, round " << i;
  }
  now += std::chrono::milliseconds(301);  // no renewal: as if `live` had died
  EXPECT_TRUE(open_stream(other, "u1"));
}

// The memory limiter, with its hold() verdicts kept back while told to, as
// Redis's arrive a round trip later: what the pod does meanwhile comes first.
class VerdictsLate final : public Limiter {
 public:
  explicit VerdictsLate(Limiter& inner) : inner_(inner) {}
  void take(const std::string& key, Rate rate, VerdictCallback done) override { inner_.take(key, rate, std::move(done)); }
  void give_back(const std::string& key, Rate rate) override { inner_.give_back(key, rate); }
  void hold(const std::string& key, const std::string& member, std::uint32_t max, std::chrono::milliseconds ttl,
            VerdictCallback done) override {
    inner_.hold(key, member, max, ttl, [this, done = std::move(done)](Verdict v) {
      if (!late_) return done(v);
      kept_.push_back([done, v] { done(v); });
    });
  }
  void release(const std::string& key, const std::string& member) override { inner_.release(key, member); }
  ComponentStatus status() const override { return inner_.status(); }
  void stop() override {}

  void keep_verdicts() { late_ = true; }
  void hand_on_verdicts() {
    late_ = false;
    for (auto& answer : std::exchange(kept_, {})) answer();
  }

 private:
  Limiter& inner_;
  bool late_ = false;
  std::vector<std::function<void()>> kept_;
};

// A place refused, then taken by a renewal before its refusal came back (a
// stream of the user closed meanwhile): no ticket holds it, so it is given
// back, or the user would have one stream fewer until it expires.
TEST(AdmissionStreams, APlaceARenewalTookWhileItsRefusalWasOnItsWayIsGivenBack) {
  MemoryLimiter shared;
  VerdictsLate late(shared);
  Admission a(late, streams_only(1), proxies(""));
  auto first = open_stream(a, "u1");
  ASSERT_TRUE(first);
  late.keep_verdicts();
  bool answered = false;
  StreamTicket second;
  a.stream_opens("u1", [&](StreamTicket t) {
    answered = true;
    second = std::move(t);
  });
  first.reset();      // its place is free again
  a.renew_streams();  // holds the refused place, now let in
  late.hand_on_verdicts();
  ASSERT_TRUE(answered);
  EXPECT_FALSE(second) << "the limit was reached when it asked";
  Admission other(shared, streams_only(1), proxies(""));
  EXPECT_TRUE(open_stream(other, "u1")) << "the refused place stayed taken";
}

TEST(AdmissionStreams, ATicketThatOutlivesItsAdmissionReleasesNothing) {
  MemoryLimiter shared;
  StreamTicket ticket;
  {
    Admission a(shared, streams_only(1), proxies(""));
    ticket = open_stream(a, "u1");
    ASSERT_TRUE(ticket);
  }
  ticket.reset();  // must not reach the destroyed Admission
  Admission b(shared, streams_only(1), proxies(""));
  EXPECT_FALSE(open_stream(b, "u1")) << "the place stays until its ttl, as a dead pod's";
}

TEST(TrustedProxies, ParsesAddressesAndNetworksAndNamesABadEntry) {
  auto p = proxies("10.0.0.0/8, 127.0.0.1 ::1,fd00::/8");
  EXPECT_TRUE(p.contains(ip::make_address("10.1.2.3")));
  EXPECT_TRUE(p.contains(ip::make_address("127.0.0.1")));
  EXPECT_TRUE(p.contains(ip::make_address("::ffff:10.9.9.9"))) << "IPv4-mapped is IPv4";
  EXPECT_TRUE(p.contains(ip::make_address("fd12::1")));
  EXPECT_FALSE(p.contains(ip::make_address("11.0.0.1")));
  EXPECT_FALSE(p.contains(ip::make_address("127.0.0.2")));
  std::string error;
  EXPECT_FALSE(TrustedProxies::parse("10.0.0.0/8, nginx", error));
  EXPECT_NE(error.find("nginx"), std::string::npos);
  EXPECT_FALSE(TrustedProxies::parse("10.0.0.0/33", error));
  EXPECT_TRUE(TrustedProxies::parse("", error)->empty());
}

TEST(TrustedProxies, ForwardedForIsBelievedOnlyFromATrustedPeer) {
  auto p = proxies("127.0.0.1, 10.0.0.0/8");
  auto direct = ip::make_address("203.0.113.7");
  EXPECT_EQ(p.client_of(direct, "1.2.3.4"), "203.0.113.7") << "a client cannot name itself";
  auto proxy = ip::make_address("127.0.0.1");
  EXPECT_EQ(p.client_of(proxy, "198.51.100.9"), "198.51.100.9");
  // The client wrote "1.2.3.4" itself; the proxies appended the rest.
  EXPECT_EQ(p.client_of(proxy, "1.2.3.4, 198.51.100.9, 10.0.0.5"), "198.51.100.9");
  EXPECT_EQ(p.client_of(proxy, ""), "127.0.0.1");
  EXPECT_EQ(p.client_of(proxy, "not-an-address"), "127.0.0.1");
  // Some balancers write the client's port too.
  EXPECT_EQ(p.client_of(proxy, "198.51.100.9:51234"), "198.51.100.9");
  EXPECT_EQ(p.client_of(proxy, "[2001:db8:1:2::1]:443"), "2001:db8:1:2::/64");
  EXPECT_EQ(p.client_of(proxy, "[2001:db8:1:2::1]"), "2001:db8:1:2::/64");
  for (const char* garbage : {"198.51.100.9:", "198.51.100.9:80a", "[198.51.100.9]:80", "[2001:db8::1]x", "[::1"})
    EXPECT_EQ(p.client_of(proxy, garbage), "127.0.0.1") << garbage;
}

TEST(TrustedProxies, AnIPv6ClientCountsAsItsSlash64) {
  auto p = proxies("127.0.0.1");
  auto proxy = ip::make_address("127.0.0.1");
  EXPECT_EQ(p.client_of(proxy, "2001:db8:1:2::1"), "2001:db8:1:2::/64");
  EXPECT_EQ(p.client_of(proxy, "2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64") << "the same host's next address";
  EXPECT_EQ(p.client_of(proxy, "2001:db8:1:3::1"), "2001:db8:1:3::/64");
  EXPECT_EQ(p.client_of(ip::make_address("::ffff:192.0.2.1"), ""), "192.0.2.1") << "IPv4-mapped is IPv4";
}

TEST(Admission, EachLimitRefusesAndIsCounted) {
  MemoryLimiter limiter;
  Admission a(limiter, Policy{{60, 2}, {60, 1}, 1, 1, std::chrono::minutes(1)}, proxies(""));
  auto peer = ip::make_address("192.0.2.1");
  EXPECT_TRUE(allowed([&](auto cb) { a.request(peer, "", cb); }));
  EXPECT_TRUE(allowed([&](auto cb) { a.request(peer, "", cb); }));
  EXPECT_FALSE(allowed([&](auto cb) { a.request(peer, "", cb); }));
  EXPECT_TRUE(allowed([&](auto cb) { a.request(ip::make_address("192.0.2.2"), "", cb); }));

  EXPECT_TRUE(allowed([&](auto cb) { a.chat("u1", cb); }));
  EXPECT_FALSE(allowed([&](auto cb) { a.chat("u1", cb); }));
  EXPECT_TRUE(allowed([&](auto cb) { a.chat("u2", cb); }));

  EXPECT_TRUE(allowed([&](auto cb) { a.reply_starts("u1", "m1", cb); }));
  EXPECT_FALSE(allowed([&](auto cb) { a.reply_starts("u1", "m2", cb); }));
  a.reply_ended("m1");
  EXPECT_TRUE(allowed([&](auto cb) { a.reply_starts("u1", "m2", cb); }));
  a.reply_ended("m-unknown");  // not admitted here: nothing happens

  auto first = open_stream(a, "u1");
  EXPECT_TRUE(first);
  EXPECT_FALSE(open_stream(a, "u1"));
  first.reset();
  EXPECT_TRUE(open_stream(a, "u1")) << "a closed stream frees its place";

  const auto& m = a.metrics();
  EXPECT_EQ(m.refused[static_cast<std::size_t>(Limit::ip)].value(), 1u);
  EXPECT_EQ(m.refused[static_cast<std::size_t>(Limit::chat)].value(), 1u);
  EXPECT_EQ(m.refused[static_cast<std::size_t>(Limit::running_replies)].value(), 1u);
  EXPECT_EQ(m.refused[static_cast<std::size_t>(Limit::streams)].value(), 1u);
}

TEST(Admission, ZeroTurnsALimitOff) {
  MemoryLimiter limiter;
  Admission a(limiter, Policy{{0, 1}, {0, 1}, 0, 0, std::chrono::minutes(1)}, proxies(""));
  std::vector<std::shared_ptr<void>> streams;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(allowed([&](auto cb) { a.request(ip::make_address("192.0.2.1"), "", cb); }));
    ASSERT_TRUE(allowed([&](auto cb) { a.chat("u", cb); }));
    ASSERT_TRUE(allowed([&](auto cb) { a.reply_starts("u", "m" + std::to_string(i), cb); }));
    streams.push_back(open_stream(a, "u"));
    ASSERT_TRUE(streams.back());
  }
}

TEST(AddressConnections, CapsEachAddressAndExemptsProxies) {
  auto gate = std::make_shared<http::AddressConnections>(
      2, [](const ip::address& a) { return a == ip::make_address("10.0.0.1"); });
  auto client = ip::make_address("192.0.2.1");
  auto t1 = gate->admit(client);
  auto t2 = gate->admit(ip::make_address("::ffff:192.0.2.1"));
  EXPECT_TRUE(t1 && t2);
  EXPECT_EQ(gate->open(client), 2u);
  EXPECT_FALSE(gate->admit(client));
  EXPECT_TRUE(gate->admit(ip::make_address("192.0.2.2")));
  t1.reset();
  EXPECT_EQ(gate->open(client), 1u);
  EXPECT_TRUE(gate->admit(client));
  std::vector<std::shared_ptr<void>> many;
  for (int i = 0; i < 100; ++i) many.push_back(gate->admit(ip::make_address("10.0.0.1")));
  EXPECT_TRUE(many.back()) << "a trusted proxy is not capped";
}

TEST(AddressConnections, CountsAnIpv6ClientByItsSlash64) {
  auto gate = std::make_shared<http::AddressConnections>(2, nullptr);
  auto t1 = gate->admit(ip::make_address("2001:db8::1"));
  auto t2 = gate->admit(ip::make_address("2001:db8::2:3"));
  EXPECT_TRUE(t1 && t2);
  EXPECT_FALSE(gate->admit(ip::make_address("2001:db8::ffff:1"))) << "another address of the same /64";
  EXPECT_TRUE(gate->admit(ip::make_address("2001:db8:0:1::1"))) << "the next /64 is another client";
}

}  // namespace
}  // namespace chat::limits
