// Longer than most files for one reason: every setting of both programs sits
// in one table (name, program, default, help, parser), so --help, the flags and
// the environment cannot drift apart. The checks across settings follow it.

#include "config/config.hpp"

#include <unistd.h>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <map>
#include <sstream>

#include "common/identifier.hpp"
#include "common/port.hpp"

extern char** environ;

namespace chat::config {
namespace {

constexpr unsigned kChatd = static_cast<unsigned>(Program::chatd);
constexpr unsigned kWorker = static_cast<unsigned>(Program::worker);
constexpr unsigned kBoth = kChatd | kWorker;

template <class Int>
Int parse_int(const std::string& name, const std::string& text, Int min, Int max) {
  Int value{};
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || ptr != text.data() + text.size() || value < min || value > max)
    throw ConfigError(name + ": expected an integer from " + std::to_string(min) + " to " +
                      std::to_string(max) + ", got \"" + text + "\"");
  return value;
}

// Ten years at most: timers count nanoseconds in 64 bits, and a duration of
// centuries (meant as "never") would wrap and expire at once.
constexpr Duration kLongestDuration = std::chrono::hours{24 * 365 * 10};

Duration parse_duration_or_throw(const std::string& name, const std::string& text, Duration shortest = Duration{0}) {
  auto d = parse_duration(text);
  if (!d) throw ConfigError(name + ": expected a duration such as 250ms, 30s, 5m or 1h, got \"" + text + "\"");
  if (*d > kLongestDuration) throw ConfigError(name + ": at most 87600h (ten years), got \"" + text + "\"");
  if (*d < shortest)
    throw ConfigError(name + ": at least " + std::to_string(shortest.count()) + "ms, got \"" + text + "\"");
  return *d;
}


bool parse_bool(const std::string& name, const std::string& text) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "1" || t == "true" || t == "yes" || t == "on") return true;
  if (t == "0" || t == "false" || t == "no" || t == "off") return false;
  throw ConfigError(name + ": expected true or false, got \"" + text + "\"");
}

std::string require_non_empty(const std::string& name, const std::string& text) {
  if (text.empty()) throw ConfigError(name + ": must not be empty");
  return text;
}

// A server to connect to: a host name or an IP address, nothing more (its port
// has a setting of its own). A URL or host:port would only fail to resolve, and
// the service would run on without it. `socket_dir`: an absolute path is a
// directory holding the server's Unix socket (libpq's convention).
std::string require_host(const std::string& name, const std::string& text, bool socket_dir = false) {
  require_non_empty(name, text);
  if (socket_dir && text.front() == '/') return text;
  boost::system::error_code ec;
  boost::asio::ip::make_address(text, ec);
  if (!ec) return text;
  if (text.find("://") != std::string::npos)
    throw ConfigError(name + ": expected a host name or IP address, not a URL, got \"" + text + "\"");
  if (text.find(':') != std::string::npos)
    throw ConfigError(name + ": expected a host name or IP address without a port (the port has its own setting), got \"" +
                      text + "\"");
  auto name_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'; };
  if (!std::all_of(text.begin(), text.end(), name_char))
    throw ConfigError(name + ": expected a host name or IP address, got \"" + text + "\"");
  return text;
}

// Calls fn with each item of a comma-separated list, as written (blanks kept).
template <class Fn>
void for_each_listed(std::string_view text, Fn fn) {
  while (true) {
    auto comma = text.find(',');
    fn(text.substr(0, comma));
    if (comma == std::string_view::npos) return;
    text.remove_prefix(comma + 1);
  }
}

// An item of a comma-separated list, without the blanks around it.
std::string_view trim(std::string_view v) {
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  return v;
}

// The listener binds an address, not a name: a name would need resolving and
// could stand for several. "localhost" is the one name taken, as 127.0.0.1.
std::string require_listen_address(const std::string& name, const std::string& text) {
  if (text == "localhost") return "127.0.0.1";
  boost::system::error_code ec;
  boost::asio::ip::make_address(text, ec);
  if (ec) throw ConfigError(name + ": expected an IP address to listen on (0.0.0.0, 127.0.0.1, ::), got \"" + text + "\"");
  return text;
}

// An origin as browsers send it: scheme://host[:port], nothing after.
bool is_origin(std::string_view o) {
  auto scheme_end = o.find("://");
  if (scheme_end == std::string_view::npos) return false;
  auto scheme = o.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return false;
  auto authority = o.substr(scheme_end + 3);
  return !authority.empty() && authority.find_first_of("/?#*@ \t") == std::string_view::npos;
}

// NATS_URL: servers separated by commas, each [nats://|tls://][login@][host][:port][/…],
// read as nats.c reads them (natsUrl_Create): the scheme in any case, the login
// up to the last '@' taken as it is, a path ignored, an empty host localhost
// and an empty port 4222. What nats.c would only fail on at connect time, a
// scheme it cannot speak or a port that is no port, is caught here, naming the
// setting. A host that does not resolve yet is not (a pod may start before the
// name exists). The login is never echoed.
std::string require_nats_servers(const std::string& name, const std::string& text) {
  const auto blank = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  bool any = false;
  for_each_listed(text, [&](std::string_view entry) {
    while (!entry.empty() && blank(entry.front())) entry.remove_prefix(1);
    while (!entry.empty() && blank(entry.back())) entry.remove_suffix(1);
    if (entry.empty()) return;
    any = true;
    if (auto scheme_end = entry.find("://"); scheme_end != std::string_view::npos) {
      std::string scheme(entry.substr(0, scheme_end));
      std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
      if (scheme != "nats" && scheme != "tls")
        throw ConfigError(name + ": a server's scheme must be nats:// or tls://, got \"" + scheme + "://\"");
      entry.remove_prefix(scheme_end + 3);
    }
    if (auto at = entry.rfind('@'); at != std::string_view::npos) entry.remove_prefix(at + 1);
    auto address = entry.substr(0, entry.find('/'));
    // host:port, the host maybe an IPv6 literal in brackets
    auto port_colon = address.rfind(':');
    if (port_colon != std::string_view::npos && address.find(']', port_colon) != std::string_view::npos)
      port_colon = std::string_view::npos;
    auto port = port_colon == std::string_view::npos ? std::string_view{} : address.substr(port_colon + 1);
    auto host = address.substr(0, port_colon);
    if (std::any_of(host.begin(), host.end(), blank) || (!port.empty() && !parse_port(port)))
      throw ConfigError(name + ": expected servers such as nats://nats:4222 separated by commas, got a server at \"" +
                        std::string(address) + "\"");
  });
  if (!any) throw ConfigError(name + ": names no server");
  return text;
}

// SERVER_CORS_ORIGINS: "*", or origins separated by commas (blanks around each ignored).
std::string require_cors_origins(const std::string& name, const std::string& text) {
  if (text == "*") return text;
  for_each_listed(text, [&](std::string_view item) {
    auto entry = trim(item);
    if (!is_origin(entry))
      throw ConfigError(name + ": expected * or origins such as https://chat.example.com separated by commas, got \"" +
                        std::string(entry) + "\"");
  });
  return text;
}

// Full checks happen where the URL is used; this catches typos at start.
std::string require_http_url(const std::string& name, const std::string& text) {
  if ((text.rfind("http://", 0) != 0 && text.rfind("https://", 0) != 0) || text.find("://") + 3 >= text.size())
    throw ConfigError(name + ": expected an http:// or https:// URL");
  return text;
}

// OTEL_EXPORTER_OTLP_HEADERS: "key=value,key2=value2", values percent-encoded.
std::vector<std::pair<std::string, std::string>> parse_key_values(const std::string& name, std::string_view text) {
  auto decode = [&](std::string_view v) {
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '%' && i + 2 < v.size() && std::isxdigit(static_cast<unsigned char>(v[i + 1])) &&
          std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
        out.push_back(static_cast<char>(std::stoi(std::string(v.substr(i + 1, 2)), nullptr, 16)));
        i += 2;
      } else {
        out.push_back(v[i]);
      }
    }
    return out;
  };
  std::vector<std::pair<std::string, std::string>> pairs;
  while (!text.empty()) {
    auto comma = text.find(',');
    auto item = trim(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (item.empty()) continue;
    auto eq = item.find('=');
    auto key = trim(item.substr(0, eq));
    if (eq == std::string_view::npos || key.empty() ||
        !std::all_of(key.begin(), key.end(), [](char c) { return std::isgraph(static_cast<unsigned char>(c)) && c != ':'; }))
      throw ConfigError(name + ": expected key=value pairs separated by commas");
    auto value = decode(trim(item.substr(eq + 1)));
    if (std::any_of(value.begin(), value.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; }))
      throw ConfigError(name + ": a value contains a line break");
    pairs.emplace_back(std::string(key), std::move(value));
  }
  return pairs;
}

double parse_ratio(const std::string& name, const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v >= 0.0 && v <= 1.0))
    throw ConfigError(name + ": expected a number from 0 to 1, got \"" + text + "\"");
  return v;
}

struct Setting {
  const char* name;
  unsigned programs;
  const char* default_text;
  const char* help;
  std::function<void(Config&, const std::string& name, const std::string& value)> apply;
};

#define INT_SETTING(field, type, lo, hi) \
  [](Config& c, const std::string& n, const std::string& v) { c.field = parse_int<type>(n, v, lo, hi); }
#define DURATION_SETTING(field) \
  [](Config& c, const std::string& n, const std::string& v) { c.field = parse_duration_or_throw(n, v); }
#define DURATION_AT_LEAST_SETTING(field, shortest) \
  [](Config& c, const std::string& n, const std::string& v) { c.field = parse_duration_or_throw(n, v, shortest); }
#define STRING_SETTING(field) \
  [](Config& c, const std::string& n, const std::string& v) { c.field = require_non_empty(n, v); }
// Empty is the default: a deployment that passes `NATS_TOKEN=${NATS_TOKEN:-}` means none.
#define OPTIONAL_STRING_SETTING(field) [](Config& c, const std::string&, const std::string& v) { c.field = v; }

const std::vector<Setting>& settings() {
  static const std::vector<Setting> table = {
      {"SERVER_HOST", kChatd, "0.0.0.0", "IP address to listen on (localhost: 127.0.0.1)",
       [](Config& c, const std::string& n, const std::string& v) { c.server.host = require_listen_address(n, v); }},
      {"SERVER_PORT", kChatd, "8080", "TCP port to listen on", INT_SETTING(server.port, std::uint16_t, 1, 65535)},
      {"SERVER_READ_TIMEOUT", kChatd, "30s", "time to read a whole request (never applies to open SSE streams); at least 100ms",
       DURATION_AT_LEAST_SETTING(server.read_timeout, std::chrono::milliseconds{100})},
      {"SERVER_WRITE_TIMEOUT", kChatd, "30s", "time to write a response (never applies to open SSE streams); at least 100ms",
       DURATION_AT_LEAST_SETTING(server.write_timeout, std::chrono::milliseconds{100})},
      {"SERVER_SHUTDOWN_TIMEOUT", kBoth, "15s", "how long SIGTERM waits for running replies to finish",
       DURATION_SETTING(server.shutdown_timeout)},
      {"SERVER_THREADS", kChatd, "0", "event-loop threads (0: one per core)", INT_SETTING(server.threads, unsigned, 0, 256)},
      {"SERVER_MAX_BODY_BYTES", kChatd, "65536", "largest accepted request body",
       INT_SETTING(server.max_body_bytes, std::size_t, 64, 64 * 1024 * 1024)},
      {"SERVER_MAX_CONNECTIONS", kChatd, "19000", "open connections at most; more are refused",
       INT_SETTING(server.max_connections, std::size_t, 1, 10'000'000)},
      {"SERVER_MAX_CONNECTIONS_PER_IP", kChatd, "256", "open connections from one client address (0: no limit)",
       INT_SETTING(limits.connections_per_ip, std::uint32_t, 0, 10'000'000)},
      {"SERVER_TRUSTED_PROXIES", kChatd, "(none)",
       "proxies whose X-Forwarded-For names the client: addresses or CIDR networks, comma-separated",
       [](Config& c, const std::string&, const std::string& v) { c.limits.trusted_proxies = v; }},
      {"RATE_LIMIT_CHAT_PER_MINUTE", kChatd, "30", "chats one user may post per minute (0: no limit)",
       INT_SETTING(limits.chat_per_minute, std::uint32_t, 0, 60'000'000)},
      {"RATE_LIMIT_CHAT_BURST", kChatd, "10", "chats one user may post at once before the per-minute rate applies",
       INT_SETTING(limits.chat_burst, std::uint32_t, 1, 1'000'000)},
      {"RATE_LIMIT_RUNNING_REPLIES", kChatd, "4", "replies of one user generating at once (0: no limit)",
       INT_SETTING(limits.running_replies, std::uint32_t, 0, 1'000'000)},
      {"RATE_LIMIT_STREAMS_PER_USER", kChatd, "20", "open SSE streams of one user, on all pods together with Redis (0: no limit)",
       INT_SETTING(limits.streams_per_user, std::uint32_t, 0, 10'000'000)},
      {"RATE_LIMIT_IP_PER_MINUTE", kChatd, "1200", "requests from one client address per minute (0: no limit)",
       INT_SETTING(limits.ip_per_minute, std::uint32_t, 0, 60'000'000)},
      {"SERVER_CORS_ORIGINS", kChatd, "*", "Access-Control-Allow-Origin value: * or a comma-separated origin list",
       [](Config& c, const std::string& n, const std::string& v) { c.server.cors_origins = require_cors_origins(n, v); }},
      {"POD_ID", kChatd, "(from hostname)", "this pod's id ([A-Za-z0-9_-], 1..128)",
       [](Config& c, const std::string& n, const std::string& v) {
         if (!is_valid_identifier(v)) throw ConfigError(n + ": must be 1..128 characters of [A-Za-z0-9_-], got \"" + v + "\"");
         c.server.pod_id = v;
       }},
      {"SSE_HEARTBEAT_INTERVAL", kChatd, "10s", "interval of ping events", DURATION_SETTING(sse.heartbeat_interval)},
      {"SSE_RETRY", kChatd, "3s", "reconnect delay suggested to clients (retry:)", DURATION_SETTING(sse.retry)},
      {"SSE_MAX_QUEUE_EVENTS", kChatd, "1024",
       "events queued for a client whose write has hung for SSE_STALL_GRACE before it is cut off",
       INT_SETTING(sse.max_queue_events, std::size_t, 1, 1'000'000)},
      // At most 1 GiB: a stream counts its queue in 32 bits, and a frame or a merge
      // may pass the limit before the cut.
      {"SSE_MAX_QUEUE_BYTES", kChatd, "8388608", "bytes queued for one client before it is cut off, reading or not",
       INT_SETTING(sse.max_queue_bytes, std::size_t, 1024, 1ull << 30)},
      {"SSE_SOCKET_SEND_BUFFER", kChatd, "524288",
       "kernel send buffer asked for each stream (SO_SNDBUF; Linux grants twice this, capped by net.core.wmem_max "
       "unless running as root); 0: the kernel's default",
       INT_SETTING(sse.socket_send_buffer, std::size_t, 0, 64ull << 20)},
      {"SSE_STALL_GRACE", kChatd, "1s", "how long a client over SSE_MAX_QUEUE_EVENTS may take to accept a write",
       DURATION_SETTING(sse.stall_grace)},
      {"SSE_HAND_OFF_SPREAD", kChatd, "2s",
       "at SIGTERM streams are told to reconnect (to another pod) within this window, spread out",
       DURATION_SETTING(sse.hand_off_spread)},
      {"SSE_LATE_JOIN_WINDOW", kChatd, "30s", "how long a reply that no client saw is kept for a late stream",
       DURATION_SETTING(sse.late_join_window)},
      {"SSE_REPLAY_WINDOW", kChatd, "10m", "how far back Last-Event-ID resume reaches", DURATION_SETTING(sse.replay_window)},
      {"SSE_REPLAY_MAX_BYTES", kChatd, "67108864", "memory for finished replies kept for resume",
       INT_SETTING(sse.replay_max_bytes, std::size_t, 0, 1ull << 40)},
      {"CHAT_MAX_MESSAGE_CHARS", kChatd, "32000", "longest accepted chat message, in characters",
       INT_SETTING(chat.max_message_chars, std::size_t, 1, 1'000'000)},
      {"CHAT_HISTORY_TURNS", kChatd, "20", "earlier messages sent to the AI as context",
       INT_SETTING(chat.history_turns, unsigned, 0, 1000)},
      {"CHAT_HISTORY_MAX_BYTES", kChatd, "1048576", "most JSON bytes of messages in one history page",
       INT_SETTING(chat.history_max_bytes, std::size_t, 4096, 64 * 1024 * 1024)},
      {"BUFFER_MAX_BUFFERS", kChatd, "10000", "messages being reordered at once", INT_SETTING(buffer.max_buffers, std::size_t, 1, 10'000'000)},
      {"BUFFER_MAX_CHUNKS", kChatd, "10000", "chunks of one message at most", INT_SETTING(buffer.max_chunks, std::size_t, 1, 10'000'000)},
      {"BUFFER_MAX_REPLY_BYTES", kChatd, "8388608",
       "bytes of one message at most (its text and the chunks waiting for their turn); past it the message ends "
       "incomplete (reply_too_large)",
       INT_SETTING(buffer.max_reply_bytes, std::size_t, 1024, 1ull << 32)},
      {"BUFFER_MAX_BYTES", kChatd, "536870912",
       "memory for replies in flight (reply text being reordered, frames kept for late streams); "
       "new chats get 503 while it is full (0: no limit)",
       INT_SETTING(buffer.max_bytes, std::size_t, 0, 1ull << 40)},
      {"BUFFER_MAX_AGE", kChatd, "5m", "age after which an unfinished message buffer is dropped", DURATION_SETTING(buffer.max_age)},
      {"BUFFER_CLEANUP_INTERVAL", kChatd, "30s", "how often expired buffers are looked for", DURATION_SETTING(buffer.cleanup_interval)},
      {"BUFFER_MISSING_CHUNK_TIMEOUT", kChatd, "30s", "wait for a missing chunk before skipping it",
       DURATION_SETTING(buffer.missing_chunk_timeout)},
      {"DB_PATH", kChatd, "data/chat.db", "SQLite database file (embedded mode)", STRING_SETTING(store.path)},
      {"DB_HOST", kChatd, "(unset: SQLite)", "PostgreSQL host; set selects PostgreSQL",
       [](Config& c, const std::string& n, const std::string& v) {
         // libpq takes several hosts, comma-separated (it tries them in turn).
         for_each_listed(v, [&](std::string_view host) { require_host(n, std::string(host), true); });
         c.store.host = v;
       }},
      {"DB_PORT", kChatd, "5432", "PostgreSQL port", INT_SETTING(store.port, std::uint16_t, 1, 65535)},
      {"DB_USER", kChatd, "postgres", "PostgreSQL user", STRING_SETTING(store.user)},
      {"DB_PASSWORD", kChatd, "postgres", "PostgreSQL password (never logged)",
       [](Config& c, const std::string&, const std::string& v) { c.store.password = v; }},
      {"DB_NAME", kChatd, "chat", "PostgreSQL database", STRING_SETTING(store.name)},
      {"DB_SSLMODE", kChatd, "disable", "PostgreSQL sslmode (disable, allow, prefer, require, verify-ca, verify-full)",
       [](Config& c, const std::string& n, const std::string& v) {
         static const char* kModes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
         if (std::find(std::begin(kModes), std::end(kModes), v) == std::end(kModes))
           throw ConfigError(n + ": unknown sslmode \"" + v + "\"");
         c.store.sslmode = v;
       }},
      {"DB_POOL_SIZE", kChatd, "4", "database connections", INT_SETTING(store.pool_size, unsigned, 1, 256)},
      {"DB_QUEUE_LIMIT", kChatd, "10000", "database operations waiting at most", INT_SETTING(store.queue_limit, std::size_t, 1, 10'000'000)},
      {"DB_SPILL_DIR", kChatd, "(DB_PATH.spill; with DB_HOST: $TMPDIR/chatd-spill-HOST-PORT-NAME)",
       "directory where finished AI replies wait on disk while DB_QUEUE_LIMIT is reached; written from there later",
       STRING_SETTING(store.spill_dir)},
      {"REDIS_HOST", kBoth, "(unset: in-memory registry)", "Redis host; set selects the Redis registry",
       [](Config& c, const std::string& n, const std::string& v) { c.redis.host = require_host(n, v); }},
      {"REDIS_PORT", kBoth, "6379", "Redis port", INT_SETTING(redis.port, std::uint16_t, 1, 65535)},
      {"REDIS_USERNAME", kBoth, "", "Redis ACL user (with REDIS_PASSWORD; empty: the default user)",
       OPTIONAL_STRING_SETTING(redis.username)},
      {"REDIS_PASSWORD", kBoth, "", "Redis password (never logged)",
       [](Config& c, const std::string&, const std::string& v) { c.redis.password = v; }},
      {"REDIS_DB", kBoth, "0", "Redis database number", INT_SETTING(redis.db, unsigned, 0, 1024)},
      {"REDIS_RENEW_INTERVAL", kBoth, "10s",
       "how often registry heartbeats are renewed and the session set and pod hash TTLs extended",
       DURATION_SETTING(redis.renew_interval)},
      {"NATS_URL", kBoth, "(unset: in-process bus)", "NATS server URL, or a cluster's servers separated by commas; set selects NATS",
       [](Config& c, const std::string& n, const std::string& v) { c.nats.url = require_nats_servers(n, v); }},
      {"NATS_MAX_RECONNECTS", kBoth, "-1", "reconnect attempts (-1: forever)", INT_SETTING(nats.max_reconnects, int, -1, 1'000'000)},
      {"NATS_RECONNECT_WAIT", kBoth, "2s", "pause between reconnect attempts", DURATION_SETTING(nats.reconnect_wait)},
      {"NATS_TOKEN", kBoth, "", "NATS authentication token (never logged)", OPTIONAL_STRING_SETTING(nats.token)},
      {"NATS_USER", kBoth, "", "NATS user (with NATS_PASSWORD)", OPTIONAL_STRING_SETTING(nats.user)},
      {"NATS_PASSWORD", kBoth, "", "NATS password (never logged)", OPTIONAL_STRING_SETTING(nats.password)},
      {"NATS_CREDS", kBoth, "", "NATS credentials file (user JWT and NKey seed)", OPTIONAL_STRING_SETTING(nats.creds_file)},
      {"NATS_TLS_CA", kBoth, "", "CA certificate (PEM) to verify the NATS servers with; set turns TLS on",
       OPTIONAL_STRING_SETTING(nats.tls_ca_file)},
      {"NATS_TLS_CERT", kBoth, "", "client certificate (PEM) for NATS servers that verify clients (with NATS_TLS_KEY)",
       OPTIONAL_STRING_SETTING(nats.tls_cert_file)},
      {"NATS_TLS_KEY", kBoth, "", "private key (PEM) of NATS_TLS_CERT", OPTIONAL_STRING_SETTING(nats.tls_key_file)},
      {"NATS_JETSTREAM", kBoth, "true with NATS_URL",
       "JetStream work queue and chunk log (false: core NATS only, for servers without JetStream)",
       [](Config& c, const std::string& n, const std::string& v) { c.nats.jetstream = parse_bool(n, v); }},
      {"NATS_SEND_ASAP", kBoth, "false",
       "write each publish at once, about 1 ms sooner, one system call each (false: nats.c's flusher batches writes)",
       [](Config& c, const std::string& n, const std::string& v) { c.nats.send_asap = parse_bool(n, v); }},
      {"JS_REPLICAS", kBoth, "1", "replicas of the JetStream streams (3 on a 3-node NATS cluster)",
       INT_SETTING(jetstream.replicas, int, 1, 5)},
      {"JS_WORK_MAX_AGE", kBoth, "24h", "how long a chat request waits in the work queue for a worker",
       DURATION_AT_LEAST_SETTING(jetstream.work_max_age, std::chrono::seconds{1})},  // 0 would be NATS's "for ever"
      {"JS_LOG_MAX_AGE", kBoth, "1h", "how long the chunk log keeps a reply (resume and gap fill reach that far)",
       DURATION_AT_LEAST_SETTING(jetstream.log_max_age, std::chrono::seconds{1})},
      {"JS_LOG_MAX_BYTES", kBoth, "1073741824", "size of the chunk log; the oldest chunks leave first",
       INT_SETTING(jetstream.log_max_bytes, std::int64_t, 1 << 20, std::numeric_limits<std::int64_t>::max())},
      {"JS_ACK_WAIT", kBoth, "30s", "silence after which a worker is presumed dead and its request delivered again",
       // Workers send progress every third of it, at least 100 ms apart: a
       // shorter wait would hand running requests to a second worker.
       DURATION_AT_LEAST_SETTING(jetstream.ack_wait, std::chrono::seconds{1})},
      {"JS_MAX_DELIVER", kBoth, "4",
       "deliveries of a request: the last one, if the others all failed, ends the reply with an error",
       INT_SETTING(jetstream.max_deliver, int, 2, 100)},
      {"JS_MAX_ACK_PENDING", kBoth, "0", "requests all workers hold at once (0: 1,000,000, no cap in practice)",
       INT_SETTING(jetstream.max_ack_pending, int, 0, 10'000'000)},
      {"WORKER_DEFAULT_PROVIDER", kBoth, "demo", "provider of requests that name none",
       [](Config& c, const std::string& n, const std::string& v) {
         if (!is_valid_identifier(v)) throw ConfigError(n + ": not a provider name: \"" + v + "\"");
         c.worker.default_provider = v;
       }},
      {"WORKER_DEMO_CHUNK_DELAY", kBoth, "40ms", "pause between demo chunks (0: full speed)",
       DURATION_SETTING(worker.demo_chunk_delay)},
      {"WORKER_DEMO_WORDS_PER_CHUNK", kBoth, "3", "words per demo chunk",
       INT_SETTING(worker.demo_words_per_chunk, unsigned, 1, 1000)},
      {"WORKER_MAX_CONCURRENT", kBoth, "1000", "generations running at once; up to ten times as many more wait their turn",
       INT_SETTING(worker.max_concurrent, std::size_t, 1, 1'000'000)},
      {"WORKER_HTTP_PORT", kWorker, "0", "port of chat-worker's /health, /ready and /metrics (0: none)",
       INT_SETTING(worker.http_port, std::uint16_t, 0, 65535)},
      {"WORKER_THREADS", kWorker, "0", "worker event-loop threads (0: one per core)", INT_SETTING(worker.threads, unsigned, 0, 256)},
      {"OPENAI_API_KEY", kBoth, "", "key of the openai provider (never logged)",
       [](Config& c, const std::string&, const std::string& v) { c.providers.openai_api_key = v; }},
      {"OPENAI_BASE_URL", kBoth, "https://api.openai.com/v1",
       "Chat Completions base URL including the version path (any OpenAI-compatible server)",
       [](Config& c, const std::string& n, const std::string& v) { c.providers.openai_base_url = require_http_url(n, v); }},
      {"OPENAI_DEFAULT_MODEL", kBoth, "gpt-4o-mini", "model of openai requests that name none",
       STRING_SETTING(providers.openai_default_model)},
      {"ANTHROPIC_API_KEY", kBoth, "", "key of the anthropic provider (never logged)",
       [](Config& c, const std::string&, const std::string& v) { c.providers.anthropic_api_key = v; }},
      {"ANTHROPIC_BASE_URL", kBoth, "https://api.anthropic.com", "Messages API base URL (without /v1)",
       [](Config& c, const std::string& n, const std::string& v) { c.providers.anthropic_base_url = require_http_url(n, v); }},
      {"ANTHROPIC_DEFAULT_MODEL", kBoth, "claude-haiku-4-5", "model of anthropic requests that name none",
       STRING_SETTING(providers.anthropic_default_model)},
      {"ANTHROPIC_VERSION", kBoth, "2023-06-01", "anthropic-version header", STRING_SETTING(providers.anthropic_version)},
      {"WORKER_PROVIDER_CONNECT_TIMEOUT", kBoth, "10s", "time to connect to a provider (DNS, TCP, proxy, TLS)",
       DURATION_AT_LEAST_SETTING(providers.connect_timeout, std::chrono::milliseconds{100})},
      {"WORKER_PROVIDER_READ_TIMEOUT", kBoth, "60s", "longest silence from a provider between bytes of a reply",
       DURATION_AT_LEAST_SETTING(providers.read_timeout, std::chrono::milliseconds{100})},
      {"WORKER_PROVIDER_MAX_RETRIES", kBoth, "2", "retries of a provider request that failed before its first token",
       INT_SETTING(providers.max_retries, unsigned, 0, 10)},
      {"HTTPS_PROXY", kBoth, "(unset: direct)", "proxy for https providers: http://[user:pass@]host:port (CONNECT tunnel)",
       [](Config& c, const std::string& n, const std::string& v) {
         if (!v.empty()) c.providers.https_proxy = require_http_url(n, v.find("://") == std::string::npos ? "http://" + v : v);
       }},
      {"NO_PROXY", kBoth, "", "hosts reached without HTTPS_PROXY: comma-separated names or .domain suffixes, * for all",
       [](Config& c, const std::string&, const std::string& v) { c.providers.no_proxy = v; }},
      {"WEB_UI", kChatd, "true", "serve the chat page at / (false: the API only; / then describes it in JSON)",
       [](Config& c, const std::string& n, const std::string& v) { c.web.ui = parse_bool(n, v); }},
      {"AUTH_MODE", kChatd, "none",
       "jwt: every API call needs a bearer token and the user is its sub; none: clients name themselves with user_id "
       "(trusted networks and development only)",
       [](Config& c, const std::string& n, const std::string& v) {
         if (v == "jwt") c.auth.mode = AuthConfig::Mode::jwt;
         else if (v == "none") c.auth.mode = AuthConfig::Mode::none;
         else throw ConfigError(n + ": expected jwt or none, got \"" + v + "\"");
       }},
      {"AUTH_JWT_SECRET", kChatd, "", "HS256 secret, at least 32 bytes (never logged)",
       [](Config& c, const std::string& n, const std::string& v) {
         if (!v.empty() && v.size() < 32) throw ConfigError(n + ": must be at least 32 bytes long");
         c.auth.jwt_secret = v;
       }},
      {"AUTH_JWT_PUBLIC_KEY_FILE", kChatd, "", "PEM public key (RSA 2048+ for RS256, EC P-256 for ES256)",
       [](Config& c, const std::string&, const std::string& v) { c.auth.public_key_file = v; }},
      {"AUTH_JWKS_FILE", kChatd, "", "JWKS file of RS256/ES256 keys chosen by kid; re-read when it changes",
       [](Config& c, const std::string&, const std::string& v) { c.auth.jwks_file = v; }},
      {"AUTH_JWT_ISSUER", kChatd, "", "required iss claim (empty: not checked)",
       [](Config& c, const std::string&, const std::string& v) { c.auth.issuer = v; }},
      {"AUTH_JWT_AUDIENCE", kChatd, "", "required aud claim (empty: not checked)",
       [](Config& c, const std::string&, const std::string& v) { c.auth.audience = v; }},
      {"AUTH_JWT_LEEWAY", kChatd, "30s", "clock skew allowed on exp and nbf", DURATION_SETTING(auth.leeway)},
      {"OTEL_EXPORTER_OTLP_ENDPOINT", kBoth, "(unset: no traces)",
       "OpenTelemetry collector base URL; spans go to it + /v1/traces as OTLP/HTTP JSON",
       [](Config& c, const std::string& n, const std::string& v) {
         if (v.empty()) return;
         auto base = require_http_url(n, v);
         while (base.ends_with('/')) base.pop_back();
         c.trace.url = base + "/v1/traces";
       }},
      {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", kBoth, "(unset)", "full URL for spans; overrides OTEL_EXPORTER_OTLP_ENDPOINT",
       [](Config& c, const std::string& n, const std::string& v) {
         if (!v.empty()) c.trace.url = require_http_url(n, v);
       }},
      {"OTEL_EXPORTER_OTLP_PROTOCOL", kBoth, "http/json", "only http/json is spoken",
       [](Config&, const std::string& n, const std::string& v) {
         if (v != "http/json") throw ConfigError(n + ": only http/json is supported, got \"" + v + "\"");
       }},
      {"OTEL_EXPORTER_OTLP_HEADERS", kBoth, "", "headers of each export, key=value,... (values percent-encoded; never logged)",
       [](Config& c, const std::string& n, const std::string& v) { c.trace.headers = parse_key_values(n, v); }},
      {"OTEL_EXPORTER_OTLP_TIMEOUT", kBoth, "10000", "milliseconds one export may take",
       [](Config& c, const std::string& n, const std::string& v) {
         c.trace.timeout = Duration{parse_int<std::int64_t>(n, v, 1, 600'000)};
       }},
      {"OTEL_SERVICE_NAME", kBoth, "(the program's name)", "service.name of the spans", STRING_SETTING(trace.service_name)},
      {"OTEL_RESOURCE_ATTRIBUTES", kBoth, "", "more resource attributes, key=value,...",
       [](Config& c, const std::string& n, const std::string& v) { c.trace.resource_attributes = parse_key_values(n, v); }},
      {"OTEL_TRACES_SAMPLER", kBoth, "parentbased_always_on",
       "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
       [](Config& c, const std::string& n, const std::string& v) {
         static const char* const kSamplers[] = {"always_on", "always_off", "traceidratio", "parentbased_always_on",
                                                 "parentbased_always_off", "parentbased_traceidratio"};
         if (std::find(std::begin(kSamplers), std::end(kSamplers), v) == std::end(kSamplers))
           throw ConfigError(n + ": not a sampler: \"" + v + "\"");
         c.trace.sampler = v;
       }},
      {"OTEL_TRACES_SAMPLER_ARG", kBoth, "1.0", "the ratio of traceidratio samplers, 0 to 1",
       [](Config& c, const std::string& n, const std::string& v) { c.trace.sampler_ratio = parse_ratio(n, v); }},
      {"OTEL_TRACES_EXPORTER", kBoth, "otlp", "otlp, or none to export nothing",
       [](Config& c, const std::string& n, const std::string& v) {
         if (v == "none") c.trace.disabled = true;
         else if (v != "otlp") throw ConfigError(n + ": expected otlp or none, got \"" + v + "\"");
       }},
      {"OTEL_SDK_DISABLED", kBoth, "false", "true turns tracing off",
       [](Config& c, const std::string& n, const std::string& v) {
         if (parse_bool(n, v)) c.trace.disabled = true;
       }},
      {"OTEL_BSP_MAX_QUEUE_SIZE", kBoth, "2048", "finished spans waiting for export; more are dropped (counted)",
       INT_SETTING(trace.max_queue, std::size_t, 1, 1'000'000)},
      {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", kBoth, "512", "spans per export",
       INT_SETTING(trace.max_batch, std::size_t, 1, 100'000)},
      {"OTEL_BSP_SCHEDULE_DELAY", kBoth, "5000", "milliseconds between exports",
       [](Config& c, const std::string& n, const std::string& v) {
         c.trace.schedule_delay = Duration{parse_int<std::int64_t>(n, v, 1, 3'600'000)};
       }},
      {"LOG_LEVEL", kBoth, "info", "debug, info, warn or error",
       [](Config& c, const std::string& n, const std::string& v) {
         static const std::map<std::string, log::Level> kLevels = {
             {"debug", log::Level::debug}, {"info", log::Level::info}, {"warn", log::Level::warn},
             {"warning", log::Level::warn}, {"error", log::Level::error}};
         auto it = kLevels.find(v);
         if (it == kLevels.end()) throw ConfigError(n + ": expected debug, info, warn or error, got \"" + v + "\"");
         c.log.level = it->second;
       }},
      {"LOG_FORMAT", kBoth, "text", "json or text",
       [](Config& c, const std::string& n, const std::string& v) {
         if (v == "json") c.log.format = log::Format::json;
         else if (v == "text") c.log.format = log::Format::text;
         else throw ConfigError(n + ": expected json or text, got \"" + v + "\"");
       }},
  };
  return table;
}

#undef INT_SETTING
#undef DURATION_SETTING
#undef STRING_SETTING

std::string flag_name(std::string_view env_name) {
  std::string flag = "--";
  for (char c : env_name) flag.push_back(c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return flag;
}

std::string default_pod_id() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::string id;
  for (const char* p = host; *p && id.size() < 100; ++p) {
    char c = *p;
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
    id.push_back(ok ? c : '-');
  }
  if (id.empty()) id = "pod";
  return id + "-" + std::to_string(getpid());
}

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) {
  if (text == "0") return Duration{0};
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0 || digits > 12) return std::nullopt;
  long long value = 0;
  std::from_chars(text.data(), text.data() + digits, value);
  auto unit = text.substr(digits);
  if (unit == "ms") return Duration{value};
  if (unit == "s") return Duration{value * 1000};
  if (unit == "m") return Duration{value * 60'000};
  if (unit == "h") return Duration{value * 3'600'000};
  return std::nullopt;
}

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name.c_str())) return std::string{v};
    return std::nullopt;
  };
}

namespace {

void require_readable(const char* name, const std::string& path) {
  if (!path.empty() && ::access(path.c_str(), R_OK) != 0)
    throw ConfigError(std::string(name) + ": cannot read \"" + path + "\"");
}

// Contradictions and unreadable files are start-up errors that name the
// setting; whether the server accepts the login is checked on connecting.
void check_infrastructure_logins(const Config& config) {
  const auto& n = config.nats;
  int logins = !n.token.empty() + !n.user.empty() + !n.creds_file.empty();
  if (logins > 1) throw ConfigError("NATS_TOKEN, NATS_USER and NATS_CREDS: set at most one");
  if (!n.password.empty() && n.user.empty()) throw ConfigError("NATS_PASSWORD: needs NATS_USER");
  if (n.tls_cert_file.empty() != n.tls_key_file.empty())
    throw ConfigError("NATS_TLS_CERT and NATS_TLS_KEY: set both or neither");
  bool any_nats = logins > 0 || !n.password.empty() || !n.tls_ca_file.empty() || !n.tls_cert_file.empty();
  if (any_nats && !n.url) throw ConfigError(n.login_setting().empty() ? "NATS_TLS_*: set but NATS_URL is not"
                                                                       : n.login_setting() + ": set but NATS_URL is not");
  require_readable("NATS_CREDS", n.creds_file);
  require_readable("NATS_TLS_CA", n.tls_ca_file);
  require_readable("NATS_TLS_CERT", n.tls_cert_file);
  require_readable("NATS_TLS_KEY", n.tls_key_file);
  const auto& r = config.redis;
  if (!r.username.empty() && r.password.empty()) throw ConfigError("REDIS_USERNAME: needs REDIS_PASSWORD");
  if ((!r.username.empty() || !r.password.empty()) && !r.host)
    throw ConfigError("REDIS_PASSWORD: set but REDIS_HOST is not");
}

}  // namespace

std::string NatsConfig::login_setting() const {
  if (!token.empty()) return "NATS_TOKEN";
  if (!user.empty()) return "NATS_USER/NATS_PASSWORD";
  if (!creds_file.empty()) return "NATS_CREDS";
  return "";
}

bool wants_help(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; });
}

Config load(Program program, const std::vector<std::string>& args, const EnvLookup& env) {
  const unsigned mask = static_cast<unsigned>(program);
  std::map<std::string, std::string> flags;
  for (const auto& arg : args) {
    auto eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos)
      throw ConfigError("unknown argument \"" + arg + "\" (flags look like --server-port=8081; see --help)");
    flags[arg.substr(0, eq)] = arg.substr(eq + 1);
  }
  Config config;
  for (const auto& s : settings()) {
    if (!(s.programs & mask)) continue;
    auto flag = flag_name(s.name);
    std::optional<std::string> value;
    if (auto it = flags.find(flag); it != flags.end()) {
      value = it->second;
      flags.erase(it);
    } else {
      value = env(s.name);
    }
    if (value) s.apply(config, s.name, *value);
  }
  if (!flags.empty()) throw ConfigError("unknown flag " + flags.begin()->first + " (see --help)");
  if (config.server.pod_id.empty()) config.server.pod_id = default_pod_id();
  if (config.sse.heartbeat_interval.count() < 100)
    throw ConfigError("SSE_HEARTBEAT_INTERVAL: must be at least 100ms");
  if (config.buffer.cleanup_interval.count() < 10)
    throw ConfigError("BUFFER_CLEANUP_INTERVAL: must be at least 10ms");
  // At most half the 30 s heartbeat TTL: one late renewal never lets a live connection's heartbeat expire.
  if (config.redis.renew_interval.count() < 100 || config.redis.renew_interval.count() > 15'000)
    throw ConfigError("REDIS_RENEW_INTERVAL: must be from 100ms to 15s");
  check_infrastructure_logins(config);
  if (config.trace.disabled) config.trace.url.clear();
  if (config.trace.max_batch > config.trace.max_queue)
    throw ConfigError("OTEL_BSP_MAX_EXPORT_BATCH_SIZE: must not exceed OTEL_BSP_MAX_QUEUE_SIZE");
  const auto& auth = config.auth;
  bool any_key = !auth.jwt_secret.empty() || !auth.public_key_file.empty() || !auth.jwks_file.empty();
  if (auth.mode == AuthConfig::Mode::jwt && !any_key)
    throw ConfigError("AUTH_MODE=jwt needs AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE");
  // Keys without AUTH_MODE=jwt would look like protection and be none.
  if (auth.mode == AuthConfig::Mode::none && any_key)
    throw ConfigError("AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE is set but AUTH_MODE is not jwt");
  if (auth.leeway.count() > 600'000) throw ConfigError("AUTH_JWT_LEEWAY: must be at most 10m");
  return config;
}

std::string help_text(Program program) {
  const unsigned mask = static_cast<unsigned>(program);
  std::ostringstream out;
  out << (program == Program::chatd ? "chatd: chat streaming backend pod\n\n"
                                    : "chat-worker: AI workflow worker\n\n")
      << "Usage: " << (program == Program::chatd ? "chatd" : "chat-worker") << " [--flag=value ...]\n\n"
      << "Every setting is an environment variable; the flag beside it overrides it.\n\n";
  for (const auto& s : settings()) {
    if (!(s.programs & mask)) continue;
    out << "  " << s.name << " / " << flag_name(s.name) << "=…\n      " << s.help << " (default: "
        << (*s.default_text ? s.default_text : "empty") << ")\n";
  }
  return out.str();
}

}  // namespace chat::config
