"""Full chat flow against the real chatd (embedded mode): health, POST, SSE, DB."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class ChatFlowTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("flow", env={"WORKER_DEMO_CHUNK_DELAY": "10ms"})

    # -- health / ready --------------------------------------------------------
    def test_health_fields(self):
        r = self.srv.get("/health")
        self.assertEqual(r.status, 200, r)
        self.assertIn("application/json", (r.header("content-type") or "").lower(), r)
        d = r.json()
        for f in ("status", "pod_id", "timestamp", "active_connections", "active_sessions", "active_buffers",
                  "nats_connected", "redis_connected", "db_connected", "mode"):
            self.assertIn(f, d, "/health lacks %r: %r" % (f, d))
        self.assertEqual(d["status"], "healthy", d)
        self.assertEqual(d["mode"], "embedded", d)
        self.assertEqual(d["pod_id"], self.srv.pod_id, "pod_id should be POD_ID: %r" % d)
        for f in ("active_connections", "active_sessions", "active_buffers"):
            self.assertTrue(isinstance(d[f], int) and not isinstance(d[f], bool) and d[f] >= 0, "%s: %r" % (f, d))
        for f in ("nats_connected", "redis_connected", "db_connected"):
            self.assertIsInstance(d[f], bool, "%s should be a bool: %r" % (f, d))
        self.assertIs(d["db_connected"], True, d)
        ts = d["timestamp"]
        if isinstance(ts, (int, float)) and not isinstance(ts, bool):
            self.assertLess(abs(ts - time.time()), 120, "timestamp far from now: %r" % d)
        else:
            self.assertRegex(str(ts), h.RFC3339_RE, "timestamp neither unix seconds nor RFC 3339: %r" % d)

    def test_ready(self):
        r = self.srv.get("/ready")
        self.assertEqual(r.status, 200, r)

    def test_cors_on_normal_responses(self):
        r = self.srv.get("/health", headers={"Origin": "http://example.com"})
        self.assertEqual(r.header("access-control-allow-origin"), "*", "GET /health: %r" % r.headers)
        r = self.srv.chat(h.new_id("s"), h.new_id("u"), "cors check")
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.header("access-control-allow-origin"), "*", "POST /api/chat: %r" % r.headers)

    def test_cors_preflight(self):
        r = self.srv.request("OPTIONS", "/api/chat", headers={
            "Origin": "http://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        self.assertEqual(r.status, 204, r)
        self.assertTrue(r.header("access-control-allow-origin"), "no Access-Control-Allow-Origin: %r" % r.headers)
        methods = (r.header("access-control-allow-methods") or "").upper()
        self.assertIn("POST", methods, "Access-Control-Allow-Methods: %r" % r.headers)
        allow_headers = (r.header("access-control-allow-headers") or "").lower()
        self.assertTrue("content-type" in allow_headers or allow_headers == "*",
                        "Access-Control-Allow-Headers: %r" % r.headers)

    # -- the full flow ---------------------------------------------------------
    def test_full_flow(self):
        sid, uid = h.new_id("sess"), h.new_id("user")
        c = self.track(self.srv.sse(sid, uid)).open()
        self.assertEqual(c.status, 200, c.body)
        self.assertTrue((c.header("content-type") or "").startswith("text/event-stream"), c.headers)
        self.assertEqual(c.header("cache-control"), "no-cache", c.headers)
        self.assertEqual((c.header("x-accel-buffering") or "").lower(), "no", c.headers)
        first = c.next_event(5)
        self.assertEqual(first.event, "connected", first)
        cd = first.json()
        self.assertIsInstance(cd.get("connection_id"), str, cd)
        self.assertTrue(cd["connection_id"], cd)
        self.assertEqual(cd.get("session_id"), sid, cd)
        self.assertEqual(cd.get("pod_id"), self.srv.pod_id, cd)

        message = "Tell me about the zebra-7731 migration."
        r = self.srv.chat(sid, uid, message)
        self.assertEqual(r.status, 202, r)
        self.assertIn("application/json", (r.header("content-type") or "").lower())
        acc = r.json()
        for f in ("message_id", "session_id", "status", "timestamp", "correlation_id"):
            self.assertIn(f, acc, "202 body lacks %r: %r" % (f, acc))
        self.assertEqual(acc["status"], "accepted", acc)
        self.assertEqual(acc["session_id"], sid, acc)
        self.assertRegex(acc["message_id"], h.ID_RE, acc)
        self.assertTrue(acc["correlation_id"], acc)
        self.assertRegex(acc["timestamp"], h.RFC3339_RE, acc)
        mid = acc["message_id"]

        evs = c.collect_until(h.is_complete_for(mid), 30)
        rc = h.ReplyCheck(self, evs, mid, sid)
        self.assertGreaterEqual(len(rc.chunks), 3, "expected several chunks: %r" % rc.chunk_data)
        self.assertIn("zebra-7731", rc.text, "the demo reply should quote the message: %r" % rc.text)
        self.assertGreaterEqual(rc.text.count("."), 2, "expected several sentences: %r" % rc.text)
        for ev in evs:
            self.assertIn(ev.event, ("chunk", "message_complete", "ping"), "unexpected event %r" % ev)
        # retry: sent once, near the start
        self.assertEqual(len(c.retries), 1, "retry: lines seen: %r" % c.retries)
        self.assertLessEqual(c.retries[0][0], 1, "retry: should come near the start (before/with connected)")
        self.assertTrue(c.retries[0][1].isdigit(), "retry value not a number of ms: %r" % c.retries)

        # persistence
        rows = self.srv.wait_message_row(mid, "complete")
        row = rows[0]
        self.assertEqual(row["role"], "assistant", row)
        self.assertEqual(row["status"], "complete", row)
        self.assertEqual(row["session_id"], sid, row)
        self.assertEqual(row["content"], rc.text, "stored content differs from streamed chunks")
        users = self.srv.db_query("SELECT * FROM messages WHERE session_id=? AND role='user'", (sid,))
        self.assertEqual([u["content"] for u in users], [message], "user message rows: %r" % users)
        sess = self.srv.db_query("SELECT * FROM chat_sessions WHERE session_id=?", (sid,))
        self.assertEqual(len(sess), 1, sess)
        self.assertEqual(sess[0]["user_id"], uid, sess)
        if row.get("metadata"):
            json.loads(row["metadata"])  # must be valid JSON when present

    def test_reply_is_deterministic(self):
        msg = "Determinism check: alpha beta gamma."
        a, _, _ = self.run_reply(self.srv, h.new_id("s"), h.new_id("u"), msg)
        b, _, _ = self.run_reply(self.srv, h.new_id("s"), h.new_id("u"), msg)
        self.assertEqual(a.text, b.text, "the demo reply for the same message differs")

    def test_long_message_makes_long_reply(self):
        words = " ".join("word%d" % i for i in range(400))  # ~3.3 KB
        short, _, _ = self.run_reply(self.srv, h.new_id("s"), h.new_id("u"), "short one")
        long_, _, _ = self.run_reply(self.srv, h.new_id("s"), h.new_id("u"), words, timeout=60)
        self.assertGreater(len(long_.text), len(words), "long message should make a longer reply")
        self.assertGreater(len(long_.chunks), len(short.chunks) + 50)
        self.assertIn("word399", long_.text)

    def test_unicode_message_roundtrip(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        msg = "Grüße, 世界! emoji 🚀 \"quoted\" back\\slash\ttab"
        rc, acc, _ = self.run_reply(self.srv, sid, uid, msg)
        users = self.srv.db_query("SELECT content FROM messages WHERE session_id=? AND role='user'", (sid,))
        self.assertEqual([u["content"] for u in users], [msg])
        rows = self.srv.wait_message_row(acc["message_id"], "complete")
        self.assertEqual(rows[0]["content"], rc.text)

    def test_two_messages_same_session(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        c, _ = self.open_sse(self.srv, sid, uid)
        a = self.srv.chat_ok(sid, uid, "first question")
        b = self.srv.chat_ok(sid, uid, "second question", ai_provider="demo",
                             context={"temperature": 0.5, "max_tokens": 500, "system_prompt": "be brief"})
        self.assertNotEqual(a["message_id"], b["message_id"])
        evs = c.collect_until(h.is_complete_all([a["message_id"], b["message_id"]]), 60)
        ra = h.ReplyCheck(self, evs, a["message_id"], sid)
        rb = h.ReplyCheck(self, evs, b["message_id"], sid)
        self.assertIn("first question", ra.text)
        self.assertIn("second question", rb.text)
        for mid, rc in ((a["message_id"], ra), (b["message_id"], rb)):
            rows = self.srv.wait_message_row(mid, "complete")
            self.assertEqual(rows[0]["content"], rc.text)
        users = self.srv.db_query("SELECT content FROM messages WHERE session_id=? AND role='user'", (sid,))
        self.assertEqual(sorted(u["content"] for u in users), ["first question", "second question"])
        self.assertEqual(len(self.srv.db_query("SELECT * FROM chat_sessions WHERE session_id=?", (sid,))), 1)

    def test_reply_stored_without_any_client(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        acc = self.srv.chat_ok(sid, uid, "nobody is listening")
        rows = self.srv.wait_message_row(acc["message_id"], "complete")
        self.assertEqual(rows[0]["role"], "assistant")
        self.assertIn("nobody is listening", rows[0]["content"])

    def test_client_disconnect_is_not_cancel(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        c, _ = self.open_sse(self.srv, sid, uid)
        acc = self.srv.chat_ok(sid, uid, " ".join("disc%d" % i for i in range(60)))
        mid = acc["message_id"]
        c.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 1, 10)
        c.close()
        rows = self.srv.wait_message_row(mid, "complete")
        self.assertIn("disc59", rows[0]["content"])
        # a fresh stream on the session still works
        rc, _, _ = self.run_reply(self.srv, sid, uid, "after disconnect")
        self.assertIn("after disconnect", rc.text)

    def test_concurrent_sessions_no_crosstalk(self):
        pairs = [(h.new_id("s"), h.new_id("u")) for _ in range(5)]
        clients = [self.open_sse(self.srv, s, u)[0] for s, u in pairs]
        accs = [self.srv.chat_ok(s, u, "crosstalk marker %d" % i) for i, (s, u) in enumerate(pairs)]
        for i, (c, (s, u), acc) in enumerate(zip(clients, pairs, accs)):
            evs = c.collect_until(h.is_complete_for(acc["message_id"]), 30)
            rc = h.ReplyCheck(self, evs, acc["message_id"], s)
            self.assertIn("crosstalk marker %d" % i, rc.text)
            for ev in evs:
                if ev.event in ("chunk", "message_complete"):
                    self.assertEqual(ev.json()["message_id"], acc["message_id"],
                                     "stream of session %s got another session's event: %r" % (s, ev))

    def test_keep_alive_several_requests_one_connection(self):
        conn = h.HttpConn(self.srv.port)
        try:
            sock = conn.sock
            r1 = conn.request("GET", "/health")
            self.assertEqual(r1.status, 200, r1)
            self.assertNotEqual((r1.header("connection") or "").lower(), "close", r1.headers)
            body = json.dumps({"session_id": h.new_id("s"), "user_id": h.new_id("u"), "message": "keep-alive"})
            r2 = conn.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
            self.assertEqual(r2.status, 202, r2)
            r3 = conn.request("GET", "/ready")
            self.assertEqual(r3.status, 200, r3)
            r4 = conn.request("POST", "/api/chat", "{bad", {"Content-Type": "application/json"})
            self.assertEqual(r4.status, 400, r4)
            r5 = conn.request("GET", "/nope-404")
            self.assertEqual(r5.status, 404, r5)
            r6 = conn.request("GET", "/health")
            self.assertEqual(r6.status, 200, "request after a 400 and a 404 on the same connection: %r" % r6)
            self.assertIs(conn.sock, sock)
            self.assertFalse(conn.reader.eof, "server closed the keep-alive connection")
        finally:
            conn.close()

    def test_unknown_provider_is_error_not_crash(self):
        # docs/API.md#providers: an unknown provider is an error chunk, not a crash and not a 400 (the pod does not
        # know which providers the workers have): 202, then an `error` event with code unknown_provider.
        sid, uid = h.new_id("s"), h.new_id("u")
        c, _ = self.open_sse(self.srv, sid, uid)
        r = self.srv.chat(sid, uid, "hello", ai_provider="no-such-provider")
        self.assertEqual(r.status, 202, "POST with an unknown ai_provider: %r" % r)
        mid = r.json()["message_id"]
        # (the error event comes before message_complete: wait for the latter)
        c.collect_until(lambda e: e.event == "message_complete" and e.json().get("message_id") == mid, 30)
        mine = h.reply_events(c.events, mid)
        errors = [e.json() for e in mine if e.event == "error"]
        self.assertEqual([e.get("code") for e in errors], ["unknown_provider"], "error events: %r" % mine)
        self.assertIn("no-such-provider", errors[0].get("message", ""), errors[0])
        chunks = [e.json() for e in mine if e.event == "chunk"]
        self.assertTrue(chunks, "no chunk: the error must travel as an error chunk: %r" % mine)
        self.assertEqual([(d["chunk_id"], d["chunk_type"], d["is_final"]) for d in chunks], [(0, "error", True)],
                         "expected exactly one final error chunk: %r" % chunks)
        self.assertEqual((chunks[0].get("error") or {}).get("code"), "unknown_provider", chunks[0])
        completes = [e.json() for e in mine if e.event == "message_complete"]
        self.assertEqual([d.get("finish_reason") for d in completes], ["error"], completes)
        self.assertEqual(mine[-1].event, "message_complete", "message_complete must come last: %r" % mine)
        self.srv.wait_message_row(mid, "error")
        self.assertEqual(self.srv.get("/health").status, 200)
        rc, _, _ = self.run_reply(self.srv, h.new_id("s"), h.new_id("u"), "still fine")
        self.assertIn("still fine", rc.text)


class ConfiguredCorsTest(h.ChatdTestCase):
    """SERVER_CORS_ORIGINS as a list: an allowed origin is echoed (with Vary: Origin), any other gets no
    Access-Control-Allow-Origin at all; preflights follow the same rule."""

    ALLOWED = ("https://app.example.com", "http://localhost:3000")
    OTHERS = ("https://evil.example.com", "https://app.example.com.evil.net", "https://app.example.co",
              "http://app.example.com", "null")

    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("cors", env={"SERVER_CORS_ORIGINS": " , ".join(cls.ALLOWED),
                                                "WORKER_DEMO_CHUNK_DELAY": "0"})

    def assertAllowed(self, r, origin, what):
        self.assertEqual(r.header("access-control-allow-origin"), origin, "%s: %r" % (what, r.headers))
        self.assertEqual(len(r.header_all("access-control-allow-origin")), 1, "%s: %r" % (what, r.headers))
        vary = [v.strip().lower() for x in r.header_all("vary") for v in x.split(",")]
        self.assertIn("origin", vary, "%s: an echoed origin needs Vary: Origin (caches): %r" % (what, r.headers))

    def assertNotAllowed(self, r, what):
        self.assertEqual(r.header_all("access-control-allow-origin"), [], "%s: %r" % (what, r.headers))

    def test_allowed_origin_is_echoed_with_vary(self):
        for origin in self.ALLOWED:
            with self.subTest(origin=origin):
                r = self.srv.get("/health", headers={"Origin": origin})
                self.assertEqual(r.status, 200, r)
                self.assertAllowed(r, origin, "GET /health")
                r = self.srv.post_json("/api/chat", {"session_id": h.new_id("s"), "user_id": h.new_id("u"),
                                                     "message": "cors"}, headers={"Origin": origin})
                self.assertEqual(r.status, 202, r)
                self.assertAllowed(r, origin, "POST /api/chat")
                r = self.srv.post_json("/api/chat", b"{", headers={"Origin": origin})
                self.assertError(r, 400, "invalid_json")
                self.assertAllowed(r, origin, "400 on POST /api/chat")
                r = self.srv.get("/nope", headers={"Origin": origin})
                self.assertError(r, 404, "not_found")
                self.assertAllowed(r, origin, "404")

    def test_other_origin_gets_no_allow_header(self):
        for origin in self.OTHERS:
            with self.subTest(origin=origin):
                r = self.srv.get("/health", headers={"Origin": origin})
                self.assertEqual(r.status, 200, "CORS is the browser's check: the request itself is served: %r" % r)
                self.assertNotAllowed(r, "GET /health from %s" % origin)
                r = self.srv.post_json("/api/chat", {"session_id": h.new_id("s"), "user_id": h.new_id("u"),
                                                     "message": "cors"}, headers={"Origin": origin})
                self.assertEqual(r.status, 202, r)
                self.assertNotAllowed(r, "POST /api/chat from %s" % origin)
        r = self.srv.get("/health")
        self.assertNotAllowed(r, "GET /health without Origin")

    def preflight(self, origin):
        return self.srv.request("OPTIONS", "/api/chat", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, last-event-id"})

    def test_preflight(self):
        for origin in self.ALLOWED:
            with self.subTest(origin=origin):
                r = self.preflight(origin)
                self.assertEqual(r.status, 204, r)
                self.assertAllowed(r, origin, "preflight")
                methods = [m.strip().upper() for m in (r.header("access-control-allow-methods") or "").split(",")]
                for m in ("GET", "POST", "DELETE"):
                    self.assertIn(m, methods, "Access-Control-Allow-Methods: %r" % r.headers)
                headers = [x.strip().lower() for x in (r.header("access-control-allow-headers") or "").split(",")]
                for x in ("content-type", "last-event-id"):
                    self.assertIn(x, headers, "Access-Control-Allow-Headers: %r" % r.headers)
        for origin in self.OTHERS:
            with self.subTest(origin=origin):
                r = self.preflight(origin)
                self.assertNotAllowed(r, "preflight from %s" % origin)

    def test_sse_stream_head(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        c = self.track(self.srv.sse(sid, uid, headers={"Origin": self.ALLOWED[0]}))
        c.connected()
        self.assertEqual(c.header("access-control-allow-origin"), self.ALLOWED[0], c.headers)
        vary = [v.strip().lower() for k, x in c.headers if k == "vary" for v in x.split(",")]
        self.assertIn("origin", vary, "SSE head with an echoed origin needs Vary: Origin: %r" % c.headers)
        c2 = self.track(self.srv.sse(sid, uid, headers={"Origin": self.OTHERS[0]}))
        c2.connected()
        self.assertIsNone(c2.header("access-control-allow-origin"), c2.headers)


class WordsPerChunkTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("words", env={"WORKER_DEMO_CHUNK_DELAY": "0", "WORKER_DEMO_WORDS_PER_CHUNK": "1"})

    def test_one_word_per_chunk(self):
        msg = "one two three four five six seven eight"
        rc, _, _ = self.run_reply(self.srv, h.new_id("s"), h.new_id("u"), msg)
        for d in rc.chunk_data:
            self.assertLessEqual(len(d["chunk"].split()), 1, "chunk has more than one word: %r" % d)
        words = len(rc.text.split())
        self.assertGreaterEqual(len(rc.chunks), words, "fewer chunks (%d) than words (%d)" % (len(rc.chunks), words))


if __name__ == "__main__":
    unittest.main(verbosity=2)
