#pragma once
// Every setting of chatd and chat-worker: read from the environment (the seed's
// names), overridable by flags (--server-port=8081 for SERVER_PORT). A bad value
// is a ConfigError at start, never a silent default.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "log/log.hpp"

namespace chat::config {

using Duration = std::chrono::milliseconds;

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ServerConfig {
  std::string host = "0.0.0.0";
  std::uint16_t port = 8080;
  Duration read_timeout{30'000};
  Duration write_timeout{30'000};
  Duration shutdown_timeout{15'000};
  unsigned threads = 0;  // 0: one per core
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_connections = 19'000;
  std::string cors_origins = "*";
  std::string pod_id;
};

struct SseConfig {
  Duration heartbeat_interval{10'000};
  Duration retry{3'000};
  std::size_t max_queue_events = 1024;
  std::size_t max_queue_bytes = 8 * 1024 * 1024;
  std::size_t socket_send_buffer = 512 * 1024;  // SO_SNDBUF asked for each stream; 0: the kernel's own
  Duration stall_grace{1'000};
  Duration late_join_window{30'000};
  Duration hand_off_spread{2'000};
  Duration replay_window{600'000};
  std::size_t replay_max_bytes = 64 * 1024 * 1024;
};

struct ChatConfig {
  std::size_t max_message_chars = 32'000;
  unsigned history_turns = 20;
  std::size_t history_max_bytes = 1024 * 1024;
};

struct BufferConfig {
  std::size_t max_buffers = 10'000;
  std::size_t max_chunks = 10'000;
  std::size_t max_reply_bytes = 8u << 20;  // one reply's text, and the chunks waiting for their turn
  std::size_t max_bytes = 512ull << 20;  // the pod's memory for replies in flight (0: none)
  Duration max_age{300'000};
  Duration cleanup_interval{30'000};
  Duration missing_chunk_timeout{30'000};
};

struct StoreConfig {
  std::string path = "data/chat.db";
  std::optional<std::string> host;  // set: PostgreSQL
  std::uint16_t port = 5432;
  std::string user = "postgres";
  std::string password = "postgres";
  std::string name = "chat";
  std::string sslmode = "disable";
  unsigned pool_size = 4;
  std::size_t queue_limit = 10'000;
  std::string spill_dir;  // empty: the default of store::spill_dir_for
};

struct RedisConfig {
  std::optional<std::string> host;  // set: Redis registry
  std::uint16_t port = 6379;
  std::string username;  // empty: AUTH with the password alone (the default user)
  std::string password;
  unsigned db = 0;
  // How often heartbeats are renewed and the set and hash TTLs extended
  // (docs/API.md#registry: 10 s); shorter only to watch renewals in tests.
  Duration renew_interval{10'000};
};

struct NatsConfig {
  std::optional<std::string> url;  // set: NATS bus
  int max_reconnects = -1;
  Duration reconnect_wait{2'000};
  std::optional<bool> jetstream;  // unset: on whenever NATS_URL is set
  bool use_jetstream() const { return url && jetstream.value_or(true); }
  // Each publish written at once (NATS_SEND_ASAP) instead of by nats.c's
  // flusher, which waits about a millisecond to batch writes. Off: on a busy
  // machine the system call per publish costs more than the millisecond
  // (docs/BENCHMARKS.md, bench/distributed.py with BUS_ENV).
  bool send_asap = false;
  // At most one way to log in: a token, a user and password, or a credentials file.
  std::string token;
  std::string user;
  std::string password;
  std::string creds_file;
  // TLS: a CA to trust (turns TLS on), and a client certificate for servers that verify clients.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // The setting that holds the login, for error messages; empty when none is set.
  std::string login_setting() const;
};

// The JetStream streams and the workers' consumer (NATS_JETSTREAM).
struct JetStreamConfig {
  int replicas = 1;
  Duration work_max_age{24 * 3'600'000};
  Duration log_max_age{3'600'000};
  std::int64_t log_max_bytes = 1ll << 30;
  Duration ack_wait{30'000};
  int max_deliver = 4;
  int max_ack_pending = 0;  // 0: 1,000,000 (each worker pulls only what its slots allow)
};

struct WorkerConfig {
  std::string default_provider = "demo";
  Duration demo_chunk_delay{40};
  unsigned demo_words_per_chunk = 3;
  std::size_t max_concurrent = 1'000;
  unsigned threads = 0;
  std::uint16_t http_port = 0;  // /health, /ready, /metrics of chat-worker; 0: none
  // How often held requests are reported as still in progress to the work
  // queue: a third of JS_ACK_WAIT (set by the program, not a setting).
  Duration progress_interval{10'000};
  // How long one chunk-log entry is appended again before it is given up (a
  // log that refuses it for good: no permission, no storage). The reply then
  // ends without it in the log instead of holding its slot and its request
  // forever (set by the program, not a setting).
  Duration log_give_up{120'000};
};

// The openai and anthropic providers and their HTTP client (docs/API.md#providers).
// Keys are secrets: never logged, never part of an error message.
struct ProviderConfig {
  std::string openai_api_key;
  std::string openai_base_url = "https://api.openai.com/v1";
  std::string openai_default_model = "gpt-4o-mini";
  std::string anthropic_api_key;
  std::string anthropic_base_url = "https://api.anthropic.com";
  std::string anthropic_default_model = "claude-haiku-4-5";
  std::string anthropic_version = "2023-06-01";
  Duration connect_timeout{10'000};
  Duration read_timeout{60'000};  // longest silence between bytes of a reply
  unsigned max_retries = 2;       // only before the first token
  std::optional<std::string> https_proxy;  // http://[user:pass@]host:port, for https targets
  std::string no_proxy;                    // comma-separated hosts or domain suffixes
};

// The chat page (src/web, web/).
struct WebConfig {
  bool ui = true;  // serve it at /
};

// Admission limits (docs/SECURITY.md#limits); 0 turns one off.
struct LimitsConfig {
  std::uint32_t chat_per_minute = 30;
  std::uint32_t chat_burst = 10;
  std::uint32_t running_replies = 4;
  std::uint32_t streams_per_user = 20;
  std::uint32_t ip_per_minute = 1200;
  std::uint32_t connections_per_ip = 256;
  std::string trusted_proxies;  // addresses and CIDR networks whose X-Forwarded-For is believed
};

// Who may call the API (docs/SECURITY.md). Keys are secrets: never logged.
struct AuthConfig {
  enum class Mode { none, jwt };
  Mode mode = Mode::none;       // none: clients name themselves with user_id
  std::string jwt_secret;       // HS256
  std::string public_key_file;  // PEM, RS256 or ES256
  std::string jwks_file;        // JWKS, re-read when it changes
  std::string issuer;           // empty: iss not checked
  std::string audience;         // empty: aud not checked
  Duration leeway{30'000};      // clock skew allowed on exp and nbf
};

// OpenTelemetry traces (docs/OPERATIONS.md#traces), set by the standard OTEL_*
// variables. Off while no endpoint is set.
struct TraceConfig {
  std::string url;  // where spans are POSTed (…/v1/traces); empty: tracing off
  std::vector<std::pair<std::string, std::string>> headers;
  std::string service_name;  // empty: the program's name
  std::vector<std::pair<std::string, std::string>> resource_attributes;
  std::string sampler = "parentbased_always_on";
  double sampler_ratio = 1.0;
  std::size_t max_queue = 2048;
  std::size_t max_batch = 512;
  Duration schedule_delay{5'000};
  Duration timeout{10'000};
  bool disabled = false;  // OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
};

struct LogConfig {
  log::Level level = log::Level::info;
  log::Format format = log::Format::text;
};

struct Config {
  ServerConfig server;
  SseConfig sse;
  ChatConfig chat;
  BufferConfig buffer;
  StoreConfig store;
  RedisConfig redis;
  NatsConfig nats;
  JetStreamConfig jetstream;
  WorkerConfig worker;
  ProviderConfig providers;
  WebConfig web;
  LimitsConfig limits;
  AuthConfig auth;
  TraceConfig trace;
  LogConfig log;
};

// Which program reads a setting; --help of each program lists only its own.
enum class Program : unsigned { chatd = 1, worker = 2 };

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// Throws ConfigError naming the setting and the bad value.
Config load(Program program, const std::vector<std::string>& args, const EnvLookup& env);

// True when args ask for --help.
bool wants_help(const std::vector<std::string>& args);
std::string help_text(Program program);

// Parsers shared with tests: "30s", "250ms", "5m", "1h", "0".
std::optional<Duration> parse_duration(std::string_view text);

}  // namespace chat::config
