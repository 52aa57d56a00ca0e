#include <hiredis/hiredis.h>

#include <memory>

#include "config/config.hpp"
#include "registry/redis_connection.hpp"

namespace chat::registry {
namespace {

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// The error text of a reply, or empty when the command succeeded (or the
// connection broke, which is an outage, not a refusal).
std::string refusal(redisContext* context, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<std::size_t> lengths;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  ReplyPtr reply(static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(args.size()), args.data(), lengths.data())));
  if (!reply || reply->type != REDIS_REPLY_ERROR) return "";
  return std::string(reply->str, reply->len);
}

}  // namespace

std::vector<std::string> auth_command(const RedisEndpoint& endpoint) {
  if (endpoint.username.empty()) return {"AUTH", endpoint.password};
  return {"AUTH", endpoint.username, endpoint.password};
}

void check_redis_login(const RedisEndpoint& endpoint) {
  ContextPtr context(redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, timeval{2, 0}));
  if (!context || context->err) return;
  timeval command_timeout{2, 0};
  redisSetTimeout(context.get(), command_timeout);
  const char* login = endpoint.username.empty() ? "REDIS_PASSWORD" : "REDIS_USERNAME/REDIS_PASSWORD";
  if (!endpoint.password.empty()) {
    if (auto why = refusal(context.get(), auth_command(endpoint)); !why.empty())
      throw config::ConfigError(std::string(login) + ": Redis refused the login (" + why + ")");
  }
  if (auto why = refusal(context.get(), {"SELECT", std::to_string(endpoint.db)}); !why.empty()) {
    if (why.rfind("NOAUTH", 0) == 0)
      throw config::ConfigError("REDIS_PASSWORD: Redis requires a login (" + why + ")");
    throw config::ConfigError("REDIS_DB: Redis refused the database (" + why + ")");
  }
}

}  // namespace chat::registry
