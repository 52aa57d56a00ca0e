"""The chat page's files over HTTP, from the real chatd (no browser): content types, caching,
compression, the security headers, HEAD, and the JSON answers that stay for API clients
(Accept: application/json on /, GET /api, GET /api/providers, WEB_UI=false).

Run (from tests/web): CHATD_BIN=$PWD/../../build/chatd /usr/bin/python3 -m unittest -v test_web_http
"""

import gzip
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

from harness import ChatdTestCase, HttpConn  # noqa: E402

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
SECRET = "sk-test-never-shown-0123456789"


class PageFilesTest(ChatdTestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = cls.start_server("web-http", env={"OPENAI_API_KEY": SECRET})

    def get(self, path, **headers):
        return self.server.request("GET", path, headers=headers)

    def page_assets(self):
        html = self.get("/", Accept=BROWSER_ACCEPT).body.decode()
        return re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)

    def assert_security_headers(self, r):
        csp = r.header("content-security-policy") or ""
        self.assertIn("script-src 'self'", csp)
        self.assertIn("default-src 'none'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertNotIn("unsafe-eval", csp)
        self.assertEqual(r.header("x-content-type-options"), "nosniff")
        self.assertEqual(r.header("referrer-policy"), "no-referrer")

    def test_the_page_at_root(self):
        r = self.get("/", Accept=BROWSER_ACCEPT)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "text/html; charset=utf-8")
        self.assertEqual(r.header("cache-control"), "no-cache")
        self.assertRegex(r.header("etag") or "", r'^"[0-9a-f]{32}"$')
        self.assert_security_headers(r)
        html = r.body.decode()
        self.assertIn('data-testid="composer"', html)
        # No inline script: every script element loads a file of the page.
        for tag in re.findall(r"<script\b[^>]*>", html):
            self.assertRegex(tag, r'src="/assets/[^"]+\.js"', "inline script in the page: %s" % tag)
        self.assertNotRegex(html, r"\son[a-z]+=", "inline event handler in the page")
        # A conversation link (?c=) is the same page.
        self.assertEqual(self.get("/?c=s1", Accept=BROWSER_ACCEPT).body, r.body)

    def test_assets_have_their_types_and_are_cached_for_good(self):
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
        assets = self.page_assets()
        self.assertEqual(sorted(os.path.splitext(a)[1] for a in assets), [".css", ".js", ".svg"])
        for path in assets:
            r = self.get(path)
            self.assertEqual(r.status, 200, path)
            self.assertEqual(r.header("content-type"), types[os.path.splitext(path)[1]], path)
            self.assertEqual(r.header("cache-control"), "public, max-age=31536000, immutable", path)
            self.assert_security_headers(r)
            self.assertTrue(r.body, path)

    def test_gzip_when_asked_and_the_same_bytes_unpacked(self):
        script = next(a for a in self.page_assets() if a.endswith(".js"))
        plain = self.get(script)
        packed = self.get(script, **{"Accept-Encoding": "gzip, deflate, br"})
        self.assertIsNone(plain.header("content-encoding"))
        self.assertEqual(packed.header("content-encoding"), "gzip")
        self.assertEqual(packed.header("vary"), "Accept-Encoding")
        self.assertLess(len(packed.body), len(plain.body) / 2)
        self.assertEqual(gzip.decompress(packed.body), plain.body)
        self.assertNotEqual(packed.header("etag"), plain.header("etag"), "two representations, one strong ETag")
        refused = self.get(script, **{"Accept-Encoding": "gzip;q=0, identity"})
        self.assertIsNone(refused.header("content-encoding"))

    def test_if_none_match_is_answered_304(self):
        for path in ["/"] + self.page_assets():
            first = self.get(path, Accept=BROWSER_ACCEPT)
            again = self.get(path, Accept=BROWSER_ACCEPT, **{"If-None-Match": first.header("etag")})
            self.assertEqual(again.status, 304, path)
            self.assertEqual(again.body, b"")
            self.assertEqual(again.header("etag"), first.header("etag"))

    def test_head_has_the_headers_and_no_body(self):
        get = self.get("/", Accept=BROWSER_ACCEPT)
        head = self.server.request("HEAD", "/", headers={"Accept": BROWSER_ACCEPT})
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")
        self.assertEqual(head.header("content-length"), str(len(get.body)))
        self.assertEqual(head.header("etag"), get.header("etag"))
        # The connection is still good for the next request: no stray body bytes on it.
        conn = HttpConn(self.server.port)
        try:
            self.assertEqual(conn.request("HEAD", "/", headers={"Accept": BROWSER_ACCEPT}).status, 200)
            self.assertEqual(conn.request("GET", "/health").json()["status"], "healthy")
        finally:
            conn.close()

    def test_api_clients_still_get_json(self):
        for path, headers in (("/", {"Accept": "application/json"}), ("/api", {}), ("/api", {"Accept": BROWSER_ACCEPT})):
            r = self.get(path, **headers)
            self.assertEqual(r.status, 200, path)
            self.assertIn("application/json", r.header("content-type"))
            info = r.json()
            self.assertEqual(info["service"], "chatd")
            self.assertEqual(info["auth_mode"], "none")
            self.assertIn("GET /api/providers", info["endpoints"])

    def test_providers_and_their_default_models_never_keys(self):
        r = self.get("/api/providers")
        self.assertEqual(r.status, 200)
        answer = r.json()
        self.assertEqual(answer["default_provider"], "demo")
        self.assertEqual(answer["providers"], [{"name": "demo", "default_model": "demo-1"},
                                               {"name": "openai", "default_model": "gpt-4o-mini"}])
        self.assertNotIn(SECRET.encode(), r.body)
        self.assertNotIn(b"key", r.body.lower())

    def test_what_is_not_a_file_is_the_apis(self):
        self.assertError(self.get("/assets/nothing.js"), 404, "not_found")
        self.assertError(self.server.request("POST", "/"), 405, "method_not_allowed")


class ApiOnlyTest(ChatdTestCase):
    """WEB_UI=false: chatd is the API alone."""

    @classmethod
    def setUpClass(cls):
        cls.server = cls.start_server("api-only", env={"WEB_UI": "false"})

    def test_root_describes_the_api_and_there_are_no_files(self):
        r = self.server.request("GET", "/", headers={"Accept": BROWSER_ACCEPT})
        self.assertEqual(r.status, 200)
        self.assertIn("application/json", r.header("content-type"))
        self.assertEqual(r.json()["service"], "chatd")
        self.assertError(self.server.request("GET", "/assets/icon.svg"), 404, "not_found")

    def test_a_bad_value_stops_chatd(self):
        srv = self.new_server("bad-web-ui", env={"WEB_UI": "maybe"}, start=False)
        srv.spawn()
        self.assertEqual(srv.proc.wait(30), 2)
        self.assertIn("WEB_UI", srv.log())


if __name__ == "__main__":
    unittest.main()
