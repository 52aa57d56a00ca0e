// What the log writes to stdout: the test points descriptor 1 at a file while
// it logs, the way a log collector reads a pod's output.
#include "log/log.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace chat::log {
namespace {

// The lines logged by `body`, as they reached stdout.
template <class Body>
std::vector<std::string> lines_of(Body body) {
  char path[] = "/tmp/log-test-XXXXXX";
  const int file = ::mkstemp(path);
  EXPECT_GE(file, 0);
  flush();  // nothing of an earlier test may land in this file
  std::fflush(stdout);
  const int saved = ::dup(STDOUT_FILENO);
  ::dup2(file, STDOUT_FILENO);
  body();
  flush();
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(file);
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ::unlink(path);
  return lines;
}

std::string repeat(std::string_view piece, std::size_t times) {
  std::string s;
  for (std::size_t i = 0; i < times; ++i) s += piece;
  return s;
}

class LogTest : public ::testing::Test {
 protected:
  void TearDown() override { init(Level::info, Format::text); }
};

TEST_F(LogTest, ShortValuesAreWrittenWhole) {
  init(Level::info, Format::text);
  auto lines = lines_of([] { info("provider_failed", {{"provider", "openai"}, {"status", 502}, {"message", "bad gateway"}}); });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find(" info provider_failed provider=openai status=502 message=\"bad gateway\""), std::string::npos)
      << lines[0];
}

TEST_F(LogTest, AValueFromOutsideIsCutAndSaysSo) {
  init(Level::info, Format::text);
  const std::string huge(100'000, 'x');
  auto lines = lines_of([&] { warn("provider_failed", {{"message", huge}, {"status", 500}}); });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_LT(lines[0].size(), 2048u + 200u);
  EXPECT_NE(lines[0].find("...(97952 bytes cut)"), std::string::npos) << lines[0].substr(0, 120);
  EXPECT_NE(lines[0].find(" status=500"), std::string::npos) << "a field after the cut one is gone";
}

TEST_F(LogTest, ACutJsonLineIsStillJsonWithWholeCharacters) {
  init(Level::info, Format::json);
  const std::string accents = repeat("é", 5'000);  // 2 bytes each: a cut can fall inside one
  auto lines = lines_of([&] { warn("provider_failed", {{"message", "x" + accents}, {"code", "upstream"}}); });
  ASSERT_EQ(lines.size(), 1u);
  boost::system::error_code ec;
  auto line = boost::json::parse(lines[0], ec);  // rejects broken UTF-8 too
  ASSERT_FALSE(ec) << ec.message() << ": " << lines[0].substr(0, 200);
  const auto& object = line.as_object();
  EXPECT_EQ(object.at("event").as_string(), "provider_failed");
  EXPECT_EQ(object.at("code").as_string(), "upstream");
  const std::string message(object.at("message").as_string());
  EXPECT_LE(message.size(), 2048u + 32u);
  EXPECT_EQ(message.rfind("x" + repeat("é", 1'023), 0), 0u) << "not the value's start, or a character split";
  EXPECT_NE(message.find("bytes cut)"), std::string::npos);
}

TEST_F(LogTest, ALineOfManyLongValuesIsCutAsAWhole) {
  init(Level::info, Format::text);
  const std::string long_value(2'000, 'v');
  auto lines = lines_of([&] {
    info("many", {{"a", long_value}, {"b", long_value}, {"c", long_value}, {"d", long_value}, {"e", long_value},
                  {"f", long_value}, {"g", long_value}, {"h", long_value}, {"correlation_id", "corr_09e7591e191b"}});
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_LT(lines[0].size(), 8192u + 500u);
  EXPECT_NE(lines[0].find(" a=" + long_value + " "), std::string::npos) << "the first values fit whole";
  // Past the budget a long value keeps its first 64 bytes; a short one is whole.
  EXPECT_NE(lines[0].find(" h=\"" + std::string(64, 'v') + "...(1936 bytes cut)\""), std::string::npos)
      << lines[0].substr(8000);
  EXPECT_NE(lines[0].find(" correlation_id=corr_09e7591e191b"), std::string::npos) << lines[0].substr(8000);
}

TEST_F(LogTest, EscapesCountAgainstTheLineAndJsonStaysJson) {
  init(Level::info, Format::json);
  const std::string control(2'000, '\x01');  // each written as \u0001: six bytes
  auto lines = lines_of([&] {
    warn("odd_input", {{"raw", control}, {"next", std::string(3'000, 'n')}, {"ratio", std::nan("")}});
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_LT(lines[0].size(), 12'000u + 500u);
  boost::system::error_code ec;
  auto line = boost::json::parse(lines[0], ec);
  ASSERT_FALSE(ec) << ec.message() << ": " << lines[0].substr(0, 200);
  const auto& object = line.as_object();
  EXPECT_EQ(object.at("raw").as_string(), control) << "2,000 bytes: whole";
  EXPECT_EQ(std::string(object.at("next").as_string()), std::string(64, 'n') + "...(2936 bytes cut)")
      << "the escapes spent the line's budget";
  EXPECT_TRUE(object.at("ratio").is_null());
}

TEST_F(LogTest, ControlBytesInATextValueAreEscapedNotWritten) {
  init(Level::info, Format::text);
  auto lines = lines_of([&] {
    warn("provider_said", {{"error", "busy\r2026-12-04 error forged_line"}, {"colour", "\x1b[31mred"}});
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].find('\r'), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find('\x1b'), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(R"(error="busy\r2026-12-04 error forged_line")"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find(R"(colour="\u001b[31mred")"), std::string::npos) << lines[0];
}

}  // namespace
}  // namespace chat::log
