#include "config/config.hpp"

#include <gtest/gtest.h>

#include <map>

namespace chat::config {
namespace {

using namespace std::chrono_literals;

EnvLookup env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ConfigTest, DefaultsFollowTheSeed) {
  auto c = load(Program::chatd, {}, env({}));
  EXPECT_EQ(c.server.port, 8080);
  EXPECT_EQ(c.server.host, "0.0.0.0");
  EXPECT_EQ(c.server.read_timeout, 30s);
  EXPECT_EQ(c.buffer.max_buffers, 10'000u);
  EXPECT_EQ(c.buffer.max_age, 5min);
  EXPECT_EQ(c.buffer.missing_chunk_timeout, 30s);
  EXPECT_EQ(c.sse.heartbeat_interval, 10s);
  EXPECT_EQ(c.sse.socket_send_buffer, 512u * 1024);
  EXPECT_EQ(c.nats.max_reconnects, -1);
  EXPECT_EQ(c.store.path, "data/chat.db");
  EXPECT_EQ(c.store.spill_dir, "");  // the store picks its default (beside DB_PATH)
  EXPECT_FALSE(c.nats.url);
  EXPECT_FALSE(c.redis.host);
  EXPECT_FALSE(c.store.host);
  EXPECT_FALSE(c.server.pod_id.empty());
  EXPECT_EQ(c.redis.renew_interval, 10s);
}

TEST(ConfigTest, EnvironmentAndFlagsAreRead) {
  auto c = load(Program::chatd, {"--server-port=9090", "--log-format=json"},
                env({{"SERVER_PORT", "8081"}, {"POD_ID", "pod-1"}, {"BUFFER_MAX_AGE", "2m"}, {"NATS_URL", "nats://x:4222"},
                     {"SERVER_WRITE_TIMEOUT", "250ms"}, {"NATS_JETSTREAM", "true"},
                     {"NATS_SEND_ASAP", "true"}, {"DB_SPILL_DIR", "/var/spill"}, {"SSE_SOCKET_SEND_BUFFER", "0"}}));
  EXPECT_EQ(c.server.port, 9090);  // the flag wins over the environment
  EXPECT_EQ(c.server.pod_id, "pod-1");
  EXPECT_EQ(c.buffer.max_age, 2min);
  EXPECT_EQ(c.server.write_timeout, 250ms);
  EXPECT_EQ(c.nats.url, "nats://x:4222");
  EXPECT_TRUE(c.nats.jetstream);
  EXPECT_TRUE(c.nats.send_asap);
  EXPECT_FALSE(load(Program::worker, {}, env({})).nats.send_asap);  // nats.c batches by default
  EXPECT_EQ(c.store.spill_dir, "/var/spill");
  EXPECT_EQ(c.sse.socket_send_buffer, 0u);
  EXPECT_EQ(c.log.format, log::Format::json);
  EXPECT_EQ(load(Program::worker, {}, env({{"REDIS_RENEW_INTERVAL", "500ms"}})).redis.renew_interval, 500ms);
}

TEST(ConfigTest, DurationsNeedAUnit) {
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("5m"), 5min);
  EXPECT_EQ(parse_duration("1h"), 1h);
  EXPECT_EQ(parse_duration("0"), 0ms);
  EXPECT_FALSE(parse_duration("30"));
  EXPECT_FALSE(parse_duration("s"));
  EXPECT_FALSE(parse_duration("-1s"));
  EXPECT_FALSE(parse_duration("1.5s"));
  EXPECT_FALSE(parse_duration("10 s"));
}

void expect_error(std::map<std::string, std::string> vars, const std::string& mentions,
                  std::vector<std::string> args = {}) {
  try {
    load(Program::chatd, args, env(std::move(vars)));
    ADD_FAILURE() << "no error for " << mentions;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(mentions), std::string::npos) << e.what();
  }
}

TEST(ConfigTest, BadValuesAreClearErrors) {
  expect_error({{"SERVER_PORT", "0"}}, "SERVER_PORT");
  expect_error({{"SERVER_PORT", "70000"}}, "SERVER_PORT");
  expect_error({{"SERVER_PORT", "80a"}}, "SERVER_PORT");
  expect_error({{"SERVER_READ_TIMEOUT", "forever"}}, "SERVER_READ_TIMEOUT");
  expect_error({{"POD_ID", "pod.1"}}, "POD_ID");
  expect_error({{"POD_ID", "pod:1"}}, "POD_ID");
  expect_error({{"LOG_LEVEL", "loud"}}, "LOG_LEVEL");
  expect_error({{"LOG_FORMAT", "xml"}}, "LOG_FORMAT");
  expect_error({{"NATS_JETSTREAM", "maybe"}}, "NATS_JETSTREAM");
  expect_error({{"NATS_SEND_ASAP", "soon"}}, "NATS_SEND_ASAP");
  expect_error({{"DB_SSLMODE", "sometimes"}}, "DB_SSLMODE");
  expect_error({{"SSE_HEARTBEAT_INTERVAL", "0"}}, "SSE_HEARTBEAT_INTERVAL");
  expect_error({{"SSE_SOCKET_SEND_BUFFER", "-1"}}, "SSE_SOCKET_SEND_BUFFER");
  expect_error({{"SSE_SOCKET_SEND_BUFFER", "1g"}}, "SSE_SOCKET_SEND_BUFFER");
  expect_error({{"SSE_SOCKET_SEND_BUFFER", "67108865"}}, "SSE_SOCKET_SEND_BUFFER");
  // A stream's queue is counted in 32 bits: a cap at 4 GiB would never cut.
  expect_error({{"SSE_MAX_QUEUE_BYTES", "4294967296"}}, "SSE_MAX_QUEUE_BYTES");
  expect_error({{"SSE_MAX_QUEUE_BYTES", "1073741825"}}, "SSE_MAX_QUEUE_BYTES");
  expect_error({{"DB_HOST", ""}}, "DB_HOST");
  expect_error({{"REDIS_RENEW_INTERVAL", "50ms"}}, "REDIS_RENEW_INTERVAL");
  expect_error({{"REDIS_RENEW_INTERVAL", "16s"}}, "REDIS_RENEW_INTERVAL");
  expect_error({{"DB_SPILL_DIR", ""}}, "DB_SPILL_DIR");
  expect_error({{"SERVER_HOST", "chat.example.com"}}, "SERVER_HOST");
  expect_error({{"SERVER_HOST", "999.1.1.1"}}, "SERVER_HOST");
  expect_error({{"SERVER_CORS_ORIGINS", "notanorigin"}}, "SERVER_CORS_ORIGINS");
  expect_error({{"SERVER_CORS_ORIGINS", "https://a.example,"}}, "SERVER_CORS_ORIGINS");
  expect_error({{"SERVER_CORS_ORIGINS", "https://a.example/app"}}, "SERVER_CORS_ORIGINS");
  expect_error({{"SERVER_CORS_ORIGINS", "*,https://a.example"}}, "SERVER_CORS_ORIGINS");
  expect_error({{"NATS_URL", "nats://127.0.0.1:notaport"}}, "NATS_URL");
  expect_error({{"NATS_URL", "nats://127.0.0.1:99999"}}, "NATS_URL");
  expect_error({{"NATS_URL", "http://127.0.0.1:4222"}}, "NATS_URL");
  expect_error({{"NATS_URL", "nats://a:4222, nats://b:x"}}, "NATS_URL");
  expect_error({{"NATS_URL", " , "}}, "NATS_URL");
  expect_error({{"NATS_URL", "nats://a b:4222"}}, "NATS_URL");
  expect_error({{"NATS_URL", "nats://[::1]:0"}}, "NATS_URL");
  expect_error({}, "--no-such-flag", {"--no-such-flag=1"});
  expect_error({}, "positional", {"positional"});
  // A server named with its port or as a URL would only fail to resolve, and the
  // pod would run on without it (every rate limit off).
  expect_error({{"REDIS_HOST", "redis:6379"}}, "REDIS_HOST");
  expect_error({{"REDIS_HOST", "redis://redis"}}, "REDIS_HOST");
  expect_error({{"REDIS_HOST", "redis host"}}, "REDIS_HOST");
  expect_error({{"DB_HOST", "db:5432"}}, "DB_HOST");
  expect_error({{"DB_HOST", "postgres://db/chat"}}, "DB_HOST");
  // A zero timeout would fail every read, probes included.
  expect_error({{"SERVER_READ_TIMEOUT", "0"}}, "SERVER_READ_TIMEOUT");
  expect_error({{"SERVER_WRITE_TIMEOUT", "50ms"}}, "SERVER_WRITE_TIMEOUT");
  // Centuries meant as "never" would wrap to an instant timeout.
  expect_error({{"SSE_REPLAY_WINDOW", "9999999h"}}, "SSE_REPLAY_WINDOW");
  expect_error({{"SERVER_SHUTDOWN_TIMEOUT", "87601h"}}, "SERVER_SHUTDOWN_TIMEOUT");
  expect_error({{"DB_HOST", "pg1,pg2:5432"}}, "DB_HOST");
  // A zero provider timeout would fail every call; an ack wait shorter than
  // the workers' progress would hand running requests to a second worker; an
  // age of 0 is NATS's "for ever".
  expect_error({{"WORKER_PROVIDER_READ_TIMEOUT", "0"}}, "WORKER_PROVIDER_READ_TIMEOUT");
  expect_error({{"WORKER_PROVIDER_CONNECT_TIMEOUT", "50ms"}}, "WORKER_PROVIDER_CONNECT_TIMEOUT");
  expect_error({{"JS_ACK_WAIT", "500ms"}}, "JS_ACK_WAIT");
  expect_error({{"JS_WORK_MAX_AGE", "0"}}, "JS_WORK_MAX_AGE");
  expect_error({{"JS_LOG_MAX_AGE", "0s"}}, "JS_LOG_MAX_AGE");
}

TEST(ConfigTest, ServersAreNamedByHostOrAddress) {
  EXPECT_EQ(load(Program::chatd, {}, env({{"REDIS_HOST", "redis-0.redis.chat.svc.cluster.local"}})).redis.host,
            "redis-0.redis.chat.svc.cluster.local");
  EXPECT_EQ(load(Program::chatd, {}, env({{"REDIS_HOST", "::1"}})).redis.host, "::1");
  EXPECT_EQ(load(Program::chatd, {}, env({{"DB_HOST", "10.0.0.5"}})).store.host, "10.0.0.5");
  EXPECT_EQ(load(Program::chatd, {}, env({{"DB_HOST", "/var/run/postgresql"}})).store.host, "/var/run/postgresql")
      << "libpq's Unix socket directory";
  EXPECT_EQ(load(Program::chatd, {}, env({{"DB_HOST", "pg1,pg2.db.local"}})).store.host, "pg1,pg2.db.local")
      << "libpq tries several hosts in turn";
  EXPECT_EQ(load(Program::chatd, {}, env({{"JS_LOG_MAX_AGE", "17520h"}})).jetstream.log_max_age, 17520h);
}

TEST(ConfigTest, ListenAddressesAndOriginsThatAreWellFormedAreTaken) {
  EXPECT_EQ(load(Program::chatd, {}, env({{"SERVER_HOST", "localhost"}})).server.host, "127.0.0.1");
  EXPECT_EQ(load(Program::chatd, {}, env({{"SERVER_HOST", "::"}})).server.host, "::");
  auto origins = "https://chat.example.com, http://localhost:5173";
  EXPECT_EQ(load(Program::chatd, {}, env({{"SERVER_CORS_ORIGINS", origins}})).server.cors_origins, origins);
}

TEST(ConfigTest, NatsServersAreTakenAsNatsCReadsThem) {
  for (auto url : {"nats://127.0.0.1:4222", "nats", "nats:4222", "tls://nats.example.com:4443",
                   "nats://a:4222, nats://b:4222,nats://c", "nats://user:pass@nats:4222", "nats://[::1]:4222",
                   "nats://[::1]", "NATS://nats:4222", "nats://nats:4222/", "nats://host:", "nats://", ":4222",
                   "nats://nats:4222\n", "nats://user:p@ss@nats:4222", "nats://u:p#ss@nats:4222",
                   "nats://u:p/ss@nats:4222", "nats://u:p ss@nats:4222"})
    EXPECT_EQ(load(Program::chatd, {}, env({{"NATS_URL", url}})).nats.url, url) << url;
}

TEST(ConfigTest, ABadNatsServerIsNamedWithoutItsLogin) {
  try {
    load(Program::chatd, {}, env({{"NATS_URL", "nats://chat:s3cr@t@nats:http"}}));
    FAIL() << "a port that is no number was taken";
  } catch (const ConfigError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("NATS_URL"), std::string::npos) << what;
    EXPECT_NE(what.find("nats:http"), std::string::npos) << what;
    EXPECT_EQ(what.find("s3cr"), std::string::npos) << what;
  }
}

TEST(ConfigTest, OptionalLoginsAndFilesMayBeSetEmpty) {
  // A Compose file or a manifest passes `NATS_TOKEN=${NATS_TOKEN:-}`: empty means none.
  auto c = load(Program::chatd, {}, env({{"NATS_URL", "nats://127.0.0.1:4222"}, {"NATS_TOKEN", ""}, {"NATS_USER", ""},
                                         {"NATS_PASSWORD", ""}, {"NATS_CREDS", ""}, {"NATS_TLS_CA", ""},
                                         {"NATS_TLS_CERT", ""}, {"NATS_TLS_KEY", ""}, {"REDIS_USERNAME", ""}}));
  EXPECT_TRUE(c.nats.token.empty());
  EXPECT_TRUE(c.nats.tls_ca_file.empty());
  EXPECT_TRUE(c.redis.username.empty());
}

TEST(ConfigTest, EachProgramReadsOnlyItsSettings) {
  // chat-worker has no HTTP server: SERVER_PORT is not its business.
  auto c = load(Program::worker, {}, env({{"SERVER_PORT", "not-a-port"}}));
  EXPECT_EQ(c.server.port, 8080);
  EXPECT_THROW(load(Program::worker, {"--server-port=1"}, env({})), ConfigError);
}

TEST(ConfigTest, AuthModeNeedsAKeyAndKeysNeedTheMode) {
  auto c = load(Program::chatd, {}, env({}));
  EXPECT_EQ(c.auth.mode, AuthConfig::Mode::none);
  EXPECT_EQ(c.auth.leeway, 30s);
  const std::string secret(32, 's');
  c = load(Program::chatd, {"--auth-mode=jwt"},
           env({{"AUTH_JWT_SECRET", secret}, {"AUTH_JWT_ISSUER", "idp"}, {"AUTH_JWT_LEEWAY", "5s"}}));
  EXPECT_EQ(c.auth.mode, AuthConfig::Mode::jwt);
  EXPECT_EQ(c.auth.jwt_secret, secret);
  EXPECT_EQ(c.auth.issuer, "idp");
  EXPECT_EQ(c.auth.leeway, 5s);
  EXPECT_NO_THROW(load(Program::chatd, {}, env({{"AUTH_MODE", "jwt"}, {"AUTH_JWKS_FILE", "/etc/jwks.json"}})));
  EXPECT_THROW(load(Program::chatd, {}, env({{"AUTH_MODE", "jwt"}})), ConfigError);  // no key
  EXPECT_THROW(load(Program::chatd, {}, env({{"AUTH_MODE", "JWT "}})), ConfigError);
  EXPECT_THROW(load(Program::chatd, {}, env({{"AUTH_MODE", "jwt"}, {"AUTH_JWT_SECRET", "short"}})), ConfigError);
  EXPECT_THROW(load(Program::chatd, {}, env({{"AUTH_JWT_SECRET", secret}})), ConfigError);  // mode none
  EXPECT_THROW(load(Program::chatd, {}, env({{"AUTH_MODE", "jwt"}, {"AUTH_JWT_SECRET", secret}, {"AUTH_JWT_LEEWAY", "1h"}})),
               ConfigError);
}

TEST(ConfigTest, InfrastructureLoginsAreReadAndContradictionsRefused) {
  const std::string nats = "nats://127.0.0.1:4222";
  auto c = load(Program::worker, {},
                env({{"NATS_URL", nats}, {"NATS_USER", "chat-worker"}, {"NATS_PASSWORD", "pw"},
                     {"REDIS_HOST", "r"}, {"REDIS_USERNAME", "chat"}, {"REDIS_PASSWORD", "rpw"}}));
  EXPECT_EQ(c.nats.user, "chat-worker");
  EXPECT_EQ(c.nats.password, "pw");
  EXPECT_EQ(c.nats.login_setting(), "NATS_USER/NATS_PASSWORD");
  EXPECT_EQ(c.redis.username, "chat");
  EXPECT_EQ(c.redis.password, "rpw");
  c = load(Program::chatd, {}, env({{"NATS_URL", nats}, {"NATS_TOKEN", "t"}, {"NATS_TLS_CA", "/dev/null"}}));
  EXPECT_EQ(c.nats.login_setting(), "NATS_TOKEN");
  EXPECT_EQ(c.nats.tls_ca_file, "/dev/null");

  auto refused = [](std::map<std::string, std::string> vars, const std::string& names) {
    try {
      load(Program::chatd, {}, env(std::move(vars)));
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(names), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "accepted; expected an error naming " << names;
  };
  refused({{"NATS_URL", nats}, {"NATS_TOKEN", "t"}, {"NATS_USER", "u"}}, "NATS_TOKEN, NATS_USER and NATS_CREDS");
  refused({{"NATS_URL", nats}, {"NATS_PASSWORD", "p"}}, "NATS_PASSWORD: needs NATS_USER");
  refused({{"NATS_URL", nats}, {"NATS_TLS_CERT", "/dev/null"}}, "NATS_TLS_CERT and NATS_TLS_KEY");
  refused({{"NATS_TOKEN", "t"}}, "NATS_TOKEN: set but NATS_URL is not");
  refused({{"NATS_URL", nats}, {"NATS_CREDS", "/nonexistent/chat.creds"}}, "NATS_CREDS: cannot read");
  refused({{"NATS_URL", nats}, {"NATS_TLS_CA", "/nonexistent/ca.pem"}}, "NATS_TLS_CA: cannot read");
  refused({{"REDIS_HOST", "r"}, {"REDIS_USERNAME", "chat"}}, "REDIS_USERNAME: needs REDIS_PASSWORD");
  refused({{"REDIS_PASSWORD", "p"}}, "REDIS_PASSWORD: set but REDIS_HOST is not");
}

TEST(ConfigTest, HelpListsEverySettingOfTheProgram) {
  auto help = help_text(Program::chatd);
  for (const char* name : {"SERVER_PORT", "POD_ID", "BUFFER_MISSING_CHUNK_TIMEOUT", "NATS_URL", "REDIS_HOST", "DB_PATH",
                           "DB_SPILL_DIR", "SSE_HEARTBEAT_INTERVAL", "LOG_FORMAT", "--server-port", "AUTH_MODE",
                           "AUTH_JWT_SECRET", "AUTH_JWKS_FILE", "AUTH_JWT_LEEWAY", "NATS_TOKEN", "NATS_TLS_CA",
                           "REDIS_USERNAME"})
    EXPECT_NE(help.find(name), std::string::npos) << name;
  EXPECT_EQ(help_text(Program::worker).find("SERVER_PORT"), std::string::npos);
  EXPECT_TRUE(wants_help({"--help"}));
  EXPECT_FALSE(wants_help({"--server-port=1"}));
}

}  // namespace
}  // namespace chat::config
