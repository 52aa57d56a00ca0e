// PostgresStore: the conformance suite against a real PostgreSQL 15 started by
// the test (postgres_fixture.hpp), one fresh database per test, plus what only
// the PostgreSQL store promises (connection settings, the password's safety).

#include "store/postgres_store.hpp"

#include "store/pg_conn.hpp"

#include "log/log.hpp"
#include "store/postgres_fixture.hpp"
#include "store/store_conformance.hpp"

namespace chat::store::test {
namespace {

using chat::test::PostgresServer;

class PostgresBackend final : public Backend {
 public:
  PostgresBackend() : server_(PostgresServer::shared()), database_(server_.create_database()) {}

  std::unique_ptr<MessageStore> open(std::size_t queue_limit) override {
    auto cfg = server_.store_config(database_);
    cfg.queue_limit = queue_limit;
    cfg.spill_dir = spill_dir().string();
    return std::make_unique<PostgresStore>(cfg);
  }
  std::string scalar(const std::string& sql) override { return server_.query(database_, sql); }
  unsigned threads() const override { return server_.store_config(database_).pool_size; }
  std::filesystem::path spill_dir() const override { return spill_.path() / "spill"; }

  const std::string& database() const { return database_; }

 private:
  PostgresServer& server_;
  std::string database_;
  TempDir spill_{"chat-pg-spill"};
};

INSTANTIATE_TEST_SUITE_P(Postgres, StoreConformance,
                         testing::Values(BackendParam{"postgres", [] { return std::make_unique<PostgresBackend>(); }}),
                         backend_name);

TEST(PostgresStore, SchemaUsesTimestamptzAndJsonb) {
  PostgresBackend backend;
  auto store = backend.open(100);
  EXPECT_EQ(store->status().backend, "postgres");
  EXPECT_TRUE(store->connected());
  auto type_of = [&](const char* table, const char* column) {
    return backend.scalar(std::string("SELECT data_type FROM information_schema.columns WHERE table_name = '") + table +
                          "' AND column_name = '" + column + "'");
  };
  EXPECT_EQ(type_of("messages", "created_at"), "timestamp with time zone");
  EXPECT_EQ(type_of("messages", "metadata"), "jsonb");
  EXPECT_EQ(type_of("chat_sessions", "last_message_at"), "timestamp with time zone");
  EXPECT_EQ(backend.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'messages_session_created'"), "1");
}

TEST(PostgresConnection, StatementsWithParametersArePreparedOncePerSession) {
  PostgresBackend backend;
  auto cfg = PostgresServer::shared().store_config(backend.database());
  pg::ConnectParams params(cfg);
  pg::Connection c(params);
  ASSERT_TRUE(c.connect()) << c.error_message();
  static constexpr const char* kEcho = "SELECT $1::text";
  auto prepared = [&] {
    pg::Rows rows;
    EXPECT_FALSE(c.exec("SELECT count(*) FROM pg_prepared_statements", &rows));
    return rows.text(0, 0);
  };
  for (const char* value : {"one", "two", "three"}) {
    pg::Rows rows;
    ASSERT_FALSE(c.exec(kEcho, {value}, &rows));
    EXPECT_EQ(rows.text(0, 0), value);
  }
  EXPECT_EQ(prepared(), "1");  // parsed and planned once, run three times
  // A new session has none of the old one's statements: they are prepared again.
  ASSERT_TRUE(c.connect()) << c.error_message();
  pg::Rows rows;
  ASSERT_FALSE(c.exec(kEcho, {"four"}, &rows));
  EXPECT_EQ(rows.text(0, 0), "four");
  EXPECT_EQ(prepared(), "1");
}

TEST(PostgresStore, SslmodeReachesTheServer) {
  PostgresBackend backend;
  auto cfg = PostgresServer::shared().store_config(backend.database());
  cfg.sslmode = "require";  // the test server has no SSL, so this must fail
  try {
    PostgresStore store(cfg);
    ADD_FAILURE() << "sslmode=require connected to a server without SSL";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("SSL"), std::string::npos) << e.what();
  }
}

TEST(PostgresStore, AWrongPasswordFailsTheStartAndIsNeverLogged) {
  PostgresBackend backend;
  auto cfg = PostgresServer::shared().store_config(backend.database());
  const std::string secret = "Wr0ng 'pass' word=x";
  cfg.password = secret;
  log::init(log::Level::debug, log::Format::json);
  testing::internal::CaptureStdout();
  std::string error;
  try {
    PostgresStore store(cfg);
  } catch (const std::runtime_error& e) {
    error = e.what();
  }
  log::flush();
  std::string logged = testing::internal::GetCapturedStdout();
  log::init(log::Level::info, log::Format::text);
  EXPECT_NE(error.find("password authentication failed"), std::string::npos) << error;
  EXPECT_EQ(error.find(secret), std::string::npos);
  EXPECT_EQ(logged.find(secret), std::string::npos) << logged;
  EXPECT_EQ(logged.find(PostgresServer::password()), std::string::npos);
}

}  // namespace
}  // namespace chat::store::test
