// Configuration values that are numbers in disguise: non-finite and
// out-of-range texts are refused at start, naming the setting.
#include "config/config.hpp"

#include <gtest/gtest.h>

#include <map>

namespace chat::config {
namespace {

Config load_with(const std::string& name, const std::string& value) {
  return load(Program::chatd, {}, [&](const std::string& n) -> std::optional<std::string> {
    if (n == name) return value;
    return std::nullopt;
  });
}

TEST(ConfigNumbersTest, NonFiniteAndHugeNumbersAreRefused) {
  for (const char* name : {"SERVER_PORT", "SERVER_MAX_BODY_BYTES", "CHAT_MAX_MESSAGE_CHARS", "CHAT_HISTORY_MAX_BYTES"}) {
    for (const char* v : {"inf", "Infinity", "nan", "1e400", "1e3", "-1", "18446744073709551616", "0x10", " 5", "5 ",
                          "", "+5", "5.0"}) {
      try {
        load_with(name, v);
        ADD_FAILURE() << name << "=" << v << " was accepted";
      } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      }
    }
  }
}

TEST(ConfigNumbersTest, DurationsRefuseNonFiniteText) {
  for (const char* v : {"infs", "nans", "1e400s", "1.5s", "-1s", "9999999999999s", "s"})
    EXPECT_FALSE(parse_duration(v)) << v;
}

TEST(ConfigNumbersTest, TheHistoryCapIsReadAndBounded) {
  EXPECT_EQ(load_with("CHAT_HISTORY_MAX_BYTES", "65536").chat.history_max_bytes, 65536u);
  EXPECT_EQ(load(Program::chatd, {}, [](const std::string&) { return std::optional<std::string>(); }).chat.history_max_bytes,
            1024u * 1024u);
  EXPECT_THROW(load_with("CHAT_HISTORY_MAX_BYTES", "100"), ConfigError);
}

}  // namespace
}  // namespace chat::config
