// StaticSite and WebFront on a small table of their own (not the built page):
// content types, ETag and If-None-Match, gzip negotiation, cache policy, the
// security headers, HEAD, and what is left to the API.

#include <gtest/gtest.h>

#include <array>

#include "web/static_site.hpp"
#include "web/web_front.hpp"

namespace chat::web {
namespace {

namespace bhttp = boost::beast::http;

const unsigned char kPage[] = {'<', 'h', '1', '>', 'h', 'i', '<', '/', 'h', '1', '>'};
const unsigned char kPageGzip[] = {0x1f, 0x8b, 0x08, 0x00};  // the bytes only matter as "the other copy"
const unsigned char kScript[] = {'x', '(', ')'};

const std::array<EmbeddedAsset, 2> kAssets{{
    {"/", "text/html; charset=utf-8", false, "\"page1\"", kPage, kPageGzip},
    {"/assets/app-1.js", "text/javascript; charset=utf-8", true, "\"app1\"", kScript, {}},
}};

http::Request get(std::string target, bhttp::verb method = bhttp::verb::get) {
  http::Request r{method, target, 11};
  return r;
}

TEST(StaticSite, ServesThePageWithItsHeaders) {
  StaticSite site(kAssets);
  auto res = site.answer(get("/"), "/");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->result(), http::Status::ok);
  EXPECT_EQ(res->body(), "<h1>hi</h1>");
  EXPECT_EQ((*res)[bhttp::field::content_type], "text/html; charset=utf-8");
  EXPECT_EQ((*res)[bhttp::field::etag], "\"page1\"");
  EXPECT_EQ((*res)[bhttp::field::cache_control], "no-cache");
  EXPECT_EQ((*res)[bhttp::field::vary], "Accept-Encoding");
  EXPECT_EQ((*res)["Content-Security-Policy"], kContentSecurityPolicy);
  EXPECT_EQ((*res)["X-Content-Type-Options"], "nosniff");
  EXPECT_EQ((*res)["Referrer-Policy"], "no-referrer");
  EXPECT_TRUE((*res)[bhttp::field::content_encoding].empty());
}

TEST(StaticSite, TheContentSecurityPolicyAllowsNoInlineScript) {
  std::string_view csp = kContentSecurityPolicy;
  EXPECT_NE(csp.find("script-src 'self';"), std::string_view::npos);
  EXPECT_EQ(csp.find("unsafe-inline"), std::string_view::npos);
  EXPECT_EQ(csp.find("unsafe-eval"), std::string_view::npos);
  EXPECT_NE(csp.find("require-trusted-types-for 'script'"), std::string_view::npos);
}

TEST(StaticSite, HashedAssetsAreCachedForGood) {
  StaticSite site(kAssets);
  auto res = site.answer(get("/assets/app-1.js"), "/assets/app-1.js");
  ASSERT_TRUE(res);
  EXPECT_EQ((*res)[bhttp::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_EQ((*res)[bhttp::field::cache_control], "public, max-age=31536000, immutable");
  EXPECT_TRUE((*res)[bhttp::field::vary].empty()) << "no compressed copy, nothing varies";
}

TEST(StaticSite, GzipWhenTheClientTakesItUnderItsOwnEtag) {
  StaticSite site(kAssets);
  auto req = get("/");
  req.set(bhttp::field::accept_encoding, "br, gzip;q=0.8");
  auto res = site.answer(req, "/");
  ASSERT_TRUE(res);
  EXPECT_EQ((*res)[bhttp::field::content_encoding], "gzip");
  EXPECT_EQ(res->body().size(), sizeof kPageGzip);
  EXPECT_EQ((*res)[bhttp::field::etag], "\"page1-gzip\"");
}

TEST(StaticSite, AcceptEncoding) {
  EXPECT_TRUE(accepts_gzip("gzip"));
  EXPECT_TRUE(accepts_gzip("deflate, GZIP"));
  EXPECT_TRUE(accepts_gzip("*"));
  EXPECT_TRUE(accepts_gzip("gzip;q=0.5"));
  EXPECT_FALSE(accepts_gzip(""));
  EXPECT_FALSE(accepts_gzip("br, deflate"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip; q=0.000"));
  EXPECT_FALSE(accepts_gzip("*, gzip;q=0")) << "an explicit refusal beats *";
  EXPECT_TRUE(accepts_gzip("*;q=0, gzip"));
}

TEST(StaticSite, IfNoneMatchAnswers304WithoutBody) {
  StaticSite site(kAssets);
  for (std::string tag : {"\"page1\"", "W/\"page1\"", "\"other\", \"page1-gzip\"", "*"}) {
    auto req = get("/");
    req.set(bhttp::field::if_none_match, tag);
    auto res = site.answer(req, "/");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::Status::not_modified) << tag;
    EXPECT_TRUE(res->body().empty());
    EXPECT_EQ((*res)[bhttp::field::etag], "\"page1\"");
    EXPECT_FALSE((*res)["Content-Security-Policy"].empty());
  }
  auto req = get("/");
  req.set(bhttp::field::if_none_match, "\"stale\"");
  EXPECT_EQ(site.answer(req, "/")->result(), http::Status::ok);
}

TEST(StaticSite, OnlyItsOwnFilesAndOnlyGetAndHead) {
  StaticSite site(kAssets);
  EXPECT_FALSE(site.answer(get("/assets/other.js"), "/assets/other.js"));
  EXPECT_FALSE(site.answer(get("/api/chat", bhttp::verb::post), "/"));
  EXPECT_TRUE(site.answer(get("/", bhttp::verb::head), "/"));
  EXPECT_TRUE(StaticSite({}).empty());
}

TEST(WebFront, JsonOnRootIsForTheApi) {
  EXPECT_TRUE(prefers_json("application/json"));
  EXPECT_FALSE(prefers_json("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
  EXPECT_FALSE(prefers_json("*/*"));
  EXPECT_FALSE(prefers_json(""));
  EXPECT_FALSE(prefers_json("text/html, application/json"));
}

}  // namespace
}  // namespace chat::web
