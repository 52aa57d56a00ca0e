// Configuration values, as environment variables: the input is lines of
// NAME=value (names from the seeds), loaded for both programs. A bad value must
// be a ConfigError naming the setting, never a crash or a wrapped-around
// number; durations and Retry-After values are parsed on their own too.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "providers/provider_errors.hpp"

namespace cfg = chat::config;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> env;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    auto value = line.substr(eq + 1);
    env[std::string(line.substr(0, eq))] = std::string(value);
    if (auto d = cfg::parse_duration(value); d && d->count() < 0) std::abort();
    if (auto r = chat::providers::parse_retry_after(value, {}); r && r->count() < 0) std::abort();
  }
  auto lookup = [&env](const std::string& name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  for (auto program : {cfg::Program::chatd, cfg::Program::worker}) {
    try {
      auto c = cfg::load(program, {}, lookup);
      if (c.server.pod_id.empty()) std::abort();
    } catch (const cfg::ConfigError& e) {
      if (std::string_view(e.what()).empty()) std::abort();
    }
  }
  return 0;
}
