"""Request validation and HTTP error handling of chatd."""

import json
import os
import socket
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

BAD_IDS = [
    ("dot", "a.b"), ("star", "a*"), ("gt", "a>"), ("colon", "a:b"), ("space", "a b"),
    ("tab", "a\tb"), ("newline", "a\nb"), ("nul", "a\x00b"), ("ctrl", "a\x01"), ("del", "a\x7f"),
    ("too_long", "x" * 129), ("non_ascii", "caf\u00e9"), ("emoji", "id\U0001F680"), ("slash", "a/b"),
    ("percent", "a%2Eb"), ("plus", "a+b"), ("quote", "a\"b"), ("empty", ""),
]


class ValidationTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("validation", env={"WORKER_DEMO_CHUNK_DELAY": "0"})

    def body(self, **over):
        b = {"session_id": h.new_id("s"), "user_id": h.new_id("u"), "message": "hello"}
        for k, v in over.items():
            if v is _DEL:
                b.pop(k, None)
            else:
                b[k] = v
        return b

    def post(self, obj, content_type="application/json"):
        headers = {"Content-Type": content_type} if content_type is not None else {}
        data = obj if isinstance(obj, (bytes, str)) else json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return self.srv.request("POST", "/api/chat", data, headers)

    def assertNoUserMessage(self, content):
        rows = self.srv.db_query("SELECT message_id FROM messages WHERE content = ?", (content,))
        self.assertEqual(rows, [], "a rejected request left a message in the DB")

    # -- required fields -------------------------------------------------------
    def test_missing_fields(self):
        for f in ("session_id", "user_id", "message"):
            with self.subTest(missing=f):
                self.assertError(self.post(self.body(**{f: _DEL})), 400, "invalid_request", "missing %s" % f)

    def test_empty_fields(self):
        for f in ("session_id", "user_id", "message"):
            with self.subTest(empty=f):
                self.assertError(self.post(self.body(**{f: ""})), 400, "invalid_request", "empty %s" % f)

    def test_whitespace_message(self):
        for m in (" ", "   ", "\t\n \r\n", " \n"):
            with self.subTest(message=repr(m)):
                self.assertError(self.post(self.body(message=m)), 400, "invalid_request", "whitespace message %r" % m)

    def test_message_length_limit(self):
        marker = "toolong-%s " % h.new_id("m")
        too_long = marker + "a" * (32001 - len(marker))
        self.assertEqual(len(too_long), 32001)
        self.assertError(self.post(self.body(message=too_long)), 400, "invalid_request", "32001-char message")
        self.assertNoUserMessage(too_long)
        ok = "b" * 32000
        r = self.post(self.body(message=ok))
        self.assertEqual(r.status, 202, "a 32000-char message must be accepted: %r" % r)

    def test_message_limit_counts_characters_not_bytes(self):
        # 32000 two-byte characters: 64000 bytes of UTF-8, still under the 64 KiB body limit
        msg = "\u00e9" * 32000
        r = self.post(self.body(message=msg))
        self.assertEqual(r.status, 202, "32000 characters (64000 bytes) must be accepted: %r" % r)
        r = self.post(self.body(message="\u00e9" * 32001))
        self.assertError(r, 400, "invalid_request", "32001 two-byte characters")

    # -- identifiers ------------------------------------------------------------
    def test_bad_identifiers_in_post(self):
        for field in ("session_id", "user_id"):
            for name, bad in BAD_IDS:
                with self.subTest(field=field, case=name):
                    r = self.post(self.body(**{field: bad}))
                    self.assertError(r, 400, "invalid_request", "%s=%r" % (field, bad))

    def test_good_identifier_edges(self):
        for sid in ("a", "A-Z_09-az", "x" * 128):
            with self.subTest(session_id=sid[:20]):
                r = self.post(self.body(session_id=sid))
                self.assertEqual(r.status, 202, "valid session_id %r rejected: %r" % (sid[:20], r))

    def test_bad_identifiers_on_sse(self):
        good_s, good_u = h.new_id("s"), h.new_id("u")
        for field in ("session_id", "user_id"):
            for name, bad in BAD_IDS:
                with self.subTest(field=field, case=name):
                    q = {"session_id": good_s, "user_id": good_u, field: bad}
                    c = self.track(self.srv.sse_path("/api/sse?" + urllib.parse.urlencode(q))).open()
                    self.assertEqual(c.status, 400, "SSE with %s=%r: %s %r" % (field, bad, c.status, c.body[:200]))
                    try:
                        self.assertEqual(c.json_body()["error"]["code"], "invalid_request", c.body[:200])
                    except (ValueError, KeyError, TypeError):
                        self.fail("SSE 400 body is not the JSON error shape: %r" % c.body[:200])
                    c.close()

    def test_bad_identifiers_in_path(self):
        # docs/API.md#http-api: a bad identifier is a 400 wherever it comes, the path included
        uid = h.new_id("u")
        for name, bad in BAD_IDS + [("star_alone", "*"), ("gt_alone", ">")]:
            seg = urllib.parse.quote(bad, safe="")
            for method, path in (("GET", "/api/sessions/%s/messages?user_id=%s" % (seg, uid)),
                                 ("DELETE", "/api/sessions/%s?user_id=%s" % (seg, uid)),
                                 ("POST", "/api/chat/%s/cancel?user_id=%s" % (seg, uid))):
                with self.subTest(case=name, method=method, path=path.split("?")[0]):
                    r = self.srv.request(method, path, b"" if method == "POST" else None)
                    self.assertError(r, 400, "invalid_request", "%s %s" % (method, path))
        # the brief's literal cases, unquoted
        for method, path in (("GET", "/api/sessions/a.b/messages?user_id=" + uid),
                             ("DELETE", "/api/sessions/a.b?user_id=" + uid),
                             ("POST", "/api/chat/a.b/cancel?user_id=" + uid)):
            with self.subTest(method=method, path=path):
                self.assertError(self.srv.request(method, path, b"" if method == "POST" else None), 400,
                                 "invalid_request", "%s %s" % (method, path))
        # good identifiers of things that do not exist are still 404, and a path without an id segment is no route
        self.assertError(self.srv.get("/api/sessions/%s/messages?user_id=%s" % (h.new_id("nosuch"), uid)), 404,
                         "not_found", "messages of an unknown session")
        self.assertError(self.srv.request("DELETE", "/api/sessions/%s?user_id=%s" % (h.new_id("nosuch"), uid)), 404,
                         "not_found", "DELETE of an unknown session")
        self.assertError(self.srv.request("POST", "/api/chat/%s/cancel?user_id=%s" % (h.new_id("msg"), uid), b"",
                                          timeout=15.0), 404, "not_found", "cancel of an unknown message")
        self.assertError(self.srv.request("POST", "/api/chat/cancel?user_id=" + uid, b""), 404, "not_found",
                         "POST /api/chat/cancel (no message id segment)")

    def test_sse_missing_params(self):
        for path in ("/api/sse", "/api/sse?session_id=" + h.new_id("s"), "/api/sse?user_id=" + h.new_id("u"),
                     "/api/sse?session_id=&user_id=" + h.new_id("u")):
            with self.subTest(path=path):
                c = self.track(self.srv.sse_path(path)).open()
                self.assertEqual(c.status, 400, "%s -> %s %r" % (path, c.status, c.body[:200]))
                try:
                    d = c.json_body()
                    self.assertEqual(d["error"]["code"], "invalid_request", d)
                except (ValueError, KeyError, TypeError):
                    self.fail("SSE 400 body is not JSON: %r" % c.body[:200])
                c.close()

    # -- JSON types -------------------------------------------------------------
    def test_wrong_types_required(self):
        cases = [("message", 123), ("message", None), ("message", ["hi"]), ("message", {"t": "hi"}),
                 ("message", True), ("session_id", 5), ("session_id", None), ("session_id", ["s"]),
                 ("user_id", True), ("user_id", 1.5), ("user_id", {"id": "u"})]
        for field, val in cases:
            with self.subTest(field=field, value=val):
                self.assertError(self.post(self.body(**{field: val})), 400, "invalid_request", "%s=%r" % (field, val))

    def test_wrong_types_optional(self):
        cases = [("ai_provider", 5), ("model", ["m"]), ("context", "text"), ("context", [1, 2])]
        for field, val in cases:
            with self.subTest(field=field, value=val):
                self.assertError(self.post(self.body(**{field: val})), 400, "invalid_request", "%s=%r" % (field, val))

    def test_invalid_json(self):
        for raw in (b"{", b"not json", b"", b"{}x", b'{"session_id": "s", }', b"{'a': 1}", b"\xff\xfe{}"):
            with self.subTest(body=raw):
                self.assertError(self.post(raw), 400, "invalid_json", "body %r" % raw)

    def test_non_object_json(self):
        for raw in (b"[]", b"[1,2]", b'"text"', b"5", b"null", b"true"):
            with self.subTest(body=raw):
                self.assertError(self.post(raw), 400, "invalid_json", "body %r" % raw)

    def test_invalid_utf8_in_message(self):
        raw = b'{"session_id":"s1x","user_id":"u1x","message":"bad \xc3\x28 utf8"}'
        self.assertError(self.post(raw), 400, ("invalid_json", "invalid_request"), "invalid UTF-8")

    # -- size, media type, method, path -------------------------------------------
    def test_payload_too_large(self):
        marker = "big-%s " % h.new_id("m")
        big = json.dumps(self.body(message=marker + "z" * 70000))
        self.assertError(self.post(big), 413, "payload_too_large", "70 KB body")
        self.assertNoUserMessage(marker + "z" * 70000)
        self.assertEqual(self.srv.get("/health").status, 200)

    def test_payload_too_large_chunked(self):
        conn = h.HttpConn(self.srv.port)
        try:
            payload = json.dumps(self.body(message="y" * 70000)).encode()
            parts = [payload[i:i + 8192] for i in range(0, len(payload), 8192)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
            r = conn.request("POST", "/api/chat", body, {"Content-Type": "application/json",
                                                          "Transfer-Encoding": "chunked"})
            self.assertError(r, 413, "payload_too_large", "70 KB chunked body")
        finally:
            conn.close()

    def test_body_at_limit_is_not_413(self):
        # a 65536-byte body whose message is too long is a 400 (message), not a 413 (body)
        b = self.body(message="")
        base = len(json.dumps(b))
        b["message"] = "q" * (65536 - base)
        data = json.dumps(b).encode()
        self.assertEqual(len(data), 65536)
        self.assertError(self.post(data), 400, "invalid_request", "65536-byte body with a 65000-char message")

    def test_unsupported_media_type(self):
        data = json.dumps(self.body()).encode()
        for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                   "application/jsonx", "text/json", None):
            with self.subTest(content_type=ct):
                self.assertError(self.post(data, content_type=ct), 415, "unsupported_media_type", "Content-Type %r" % ct)

    def test_json_content_type_with_parameters(self):
        for ct in ("application/json; charset=utf-8", "application/json;charset=UTF-8", "application/json; charset=\"utf-8\""):
            with self.subTest(content_type=ct):
                r = self.post(self.body(), content_type=ct)
                self.assertEqual(r.status, 202, "Content-Type %r: %r" % (ct, r))

    def test_json_content_type_case_insensitive(self):
        r = self.post(self.body(), content_type="Application/JSON")
        self.assertEqual(r.status, 202, "media types are case-insensitive (RFC 9110): %r" % r)

    def test_method_not_allowed(self):
        for method, path, must in (("GET", "/api/chat", "POST"), ("PUT", "/api/chat", "POST"),
                                   ("DELETE", "/health", "GET"), ("POST", "/health", "GET"),
                                   ("POST", "/api/sse?session_id=s1&user_id=u1", "GET"), ("POST", "/ready", "GET")):
            with self.subTest(method=method, path=path):
                r = self.srv.request(method, path, b"{}" if method in ("POST", "PUT") else None,
                                     {"Content-Type": "application/json"})
                self.assertError(r, 405, "method_not_allowed", "%s %s" % (method, path))
                allow = r.header("allow")
                self.assertTrue(allow, "405 without an Allow header: %r" % r.headers)
                self.assertIn(must, [m.strip().upper() for m in allow.split(",")], "Allow: %r" % allow)

    def test_not_found(self):
        for method, path in (("GET", "/nope"), ("GET", "/api/unknown"), ("POST", "/api/chatx"), ("GET", "/healthz"),
                             ("GET", "/api/sse/extra")):
            with self.subTest(path=path):
                r = self.srv.request(method, path, b"{}" if method == "POST" else None,
                                     {"Content-Type": "application/json"})
                self.assertError(r, 404, "not_found", "%s %s" % (method, path))

    def test_error_responses_have_cors(self):
        r = self.post(b"{", content_type="application/json")
        self.assertEqual(r.status, 400)
        self.assertEqual(r.header("access-control-allow-origin"), "*", "400 response without CORS: %r" % r.headers)

    # -- ownership --------------------------------------------------------------
    def test_session_belongs_to_first_user(self):
        sid, owner, other = h.new_id("s"), h.new_id("owner"), h.new_id("intruder")
        acc = self.srv.chat_ok(sid, owner, "mine")
        marker = "intrusion-%s" % h.new_id("m")
        r = self.srv.chat(sid, other, marker)
        self.assertError(r, 403, "forbidden", "second user posting to the session")
        self.assertNoUserMessage(marker)
        c = self.track(self.srv.sse(sid, other)).open()
        # another user's session is answered like a missing one (no existence oracle)
        self.assertEqual(c.status, 404, "second user opening SSE on the session: %s %r" % (c.status, c.body[:200]))
        try:
            self.assertEqual(c.json_body()["error"]["code"], "not_found", c.body)
        except (ValueError, KeyError, TypeError):
            self.fail("SSE 404 body is not the JSON error shape: %r" % c.body[:200])
        # the owner is unaffected
        self.assertEqual(self.srv.chat(sid, owner, "still mine").status, 202)
        c2 = self.track(self.srv.sse(sid, owner))
        c2.connected()
        sess = self.srv.db_query("SELECT user_id FROM chat_sessions WHERE session_id=?", (sid,))
        self.assertEqual(sess, [{"user_id": owner}])
        self.assertTrue(acc["message_id"])

    # -- robustness ---------------------------------------------------------------
    def test_garbage_request_line(self):
        for raw in (b"HELLO\r\n\r\n", b"GET\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
                    b"GET / HTTP/9.9\r\n\r\n", b"POST /api/chat HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
            with self.subTest(raw=raw[:20]):
                s = socket.create_connection((h.HOST, self.srv.port), timeout=5)
                try:
                    s.sendall(raw)
                    s.settimeout(5)
                    try:
                        data = s.recv(4096)
                    except socket.timeout:
                        self.fail("server neither answered nor closed a garbage request within 5 s")
                    except ConnectionResetError:
                        data = b""
                    if data:
                        self.assertTrue(data.startswith(b"HTTP/1."), data[:100])
                        self.assertRegex(data[9:12].decode(), r"^4\d\d$", data[:100])
                finally:
                    s.close()
        self.assertEqual(self.srv.get("/health").status, 200)

    def test_dot_dot_path(self):
        for path in ("/%2e%2e/etc/passwd", "/../../etc/passwd", "/api/../health/../../x"):
            with self.subTest(path=path):
                r = self.srv.get(path)
                self.assertIn(r.status, (400, 404), "%s -> %r" % (path, r))
                self.assertNotIn(b"root:", r.body)

    def test_huge_header(self):
        try:
            r = self.srv.request("GET", "/health", headers={"X-Big": "a" * 200000}, timeout=10)
            self.assertIn(r.status, (400, 413, 431), r)
        except (ConnectionError, EOFError):
            pass
        self.assertEqual(self.srv.get("/health").status, 200)

    def test_zz_still_healthy_and_working(self):
        # runs last (alphabetical): after all the bad input the server is fine
        self.assertEqual(self.srv.get("/health").status, 200)
        self.assertEqual(self.srv.get("/health").json().get("status"), "healthy")
        rc, acc, _ = self.run_reply(self.srv, h.new_id("s"), h.new_id("u"), "after the storm")
        self.assertIn("after the storm", rc.text)
        rows = self.srv.wait_message_row(acc["message_id"], "complete")
        self.assertEqual(rows[0]["content"], rc.text)


class ConfiguredLimitsTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("limits", env={"CHAT_MAX_MESSAGE_CHARS": "100", "SERVER_MAX_BODY_BYTES": "1024",
                                                  "WORKER_DEMO_CHUNK_DELAY": "0"})

    def post(self, msg):
        return self.srv.chat(h.new_id("s"), h.new_id("u"), msg)

    def test_configured_message_limit(self):
        self.assertEqual(self.post("m" * 100).status, 202)
        self.assertError(self.post("m" * 101), 400, "invalid_request", "101 chars with CHAT_MAX_MESSAGE_CHARS=100")

    def test_configured_body_limit(self):
        data = json.dumps({"session_id": "s1", "user_id": "u1", "message": "m", "context": {"system_prompt": "p" * 2000}})
        r = self.srv.post_json("/api/chat", data)
        self.assertError(r, 413, "payload_too_large", "2 KB body with SERVER_MAX_BODY_BYTES=1024")


class _Del:
    pass


_DEL = _Del()


if __name__ == "__main__":
    unittest.main(verbosity=2)
