#include "auth/base64url.hpp"

#include <gtest/gtest.h>

namespace chat::auth {
namespace {

TEST(Base64Url, RoundTripsEveryLength) {
  std::string bytes;
  for (int i = 0; i < 40; ++i) {
    auto encoded = base64url_encode(bytes);
    EXPECT_EQ(encoded.find_first_of("+/="), std::string::npos);
    EXPECT_EQ(base64url_decode(encoded), bytes);
    bytes.push_back(static_cast<char>(i * 37 + 250));
  }
}

TEST(Base64Url, RefusesOtherAlphabetsAndPadding) {
  EXPECT_EQ(base64url_decode("eyJhbGciOiJIUzI1NiJ9"), std::optional<std::string>(R"({"alg":"HS256"})"));
  EXPECT_FALSE(base64url_decode("ab+/"));
  EXPECT_FALSE(base64url_decode("YQ=="));
  EXPECT_FALSE(base64url_decode("abcde"));  // a length no encoding has
}

}  // namespace
}  // namespace chat::auth
