"""docs/openapi.yaml against the real chatd.

Every response and SSE event of every e2e suite is validated by the harness
(openapi_check.py); this suite makes sure that validation has teeth and that
each documented route and event is met at least once:

- chatd serves the document byte for byte at GET /openapi.yaml;
- the document's version is the program's, its operations are the ones GET /
  lists, and it is a well-formed OpenAPI 3.1 document whose schemas compile;
- one pass over every route (2xx and its documented errors) and every event of
  the stream, on one embedded chatd, with the harness validating each answer;
- the checker rejects an undocumented field, status, event and media type.
"""

import os
import re
import unittest

import harness as h
import openapi_check as oc
from harness import Response


class ServedDocumentTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("openapi-doc")

    def test_served_document_is_the_repository_file(self):
        with open(oc.SPEC_PATH, "rb") as f:
            want = f.read()
        r = self.srv.get("/openapi.yaml")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-type"), "application/yaml")
        self.assertEqual(r.body, want, "GET /openapi.yaml differs from docs/openapi.yaml (rebuild chatd)")
        head = self.srv.request("HEAD", "/openapi.yaml")
        self.assertEqual(head.status, 200, head)
        self.assertEqual(head.body, b"")
        self.assertEqual(self.srv.request("POST", "/openapi.yaml", "{}").status, 405)

    def test_version_and_operations_match_the_program(self):
        doc = oc.spec().doc
        self.assertEqual(doc["info"]["version"], self.srv.health()["version"])
        listed = set()
        for endpoint in self.srv.get("/api").json()["endpoints"]:
            method, path = endpoint.split(" ", 1)
            listed.add((method, path.split("?", 1)[0]))
        documented = set()
        for path, item in doc["paths"].items():
            for method in item:
                # The page's files (/ and /assets/...) are not API endpoints.
                if method in oc._METHODS and path not in ("/", "/assets/{file}"):
                    documented.add((method.upper(), path))
        self.assertEqual(documented, listed, "operations in docs/openapi.yaml vs the endpoints GET /api lists")


class DocumentShapeTest(unittest.TestCase):
    def test_is_openapi_3_1_with_compiling_schemas(self):
        doc = oc.spec().doc
        self.assertTrue(str(doc["openapi"]).startswith("3.1."))
        for key in ("title", "version"):
            self.assertIn(key, doc["info"])
        ops = set()
        for path, item in doc["paths"].items():
            self.assertTrue(path.startswith("/"), path)
            for method, op in item.items():
                self.assertIn(method, oc._METHODS, "%s: %s is not an HTTP method" % (path, method))
                self.assertNotIn(op["operationId"], ops, "duplicate operationId")
                ops.add(op["operationId"])
                self.assertTrue(op.get("responses"), "%s %s has no responses" % (method, path))
                for status, resp in op["responses"].items():
                    self.assertRegex(str(status), r"^[1-5][0-9X]{2}$|^default$")
                    self.assertIn("description", oc.spec().resolve(resp), "%s %s %s" % (method, path, status))
                for p in op.get("parameters", []):
                    p = oc.spec().resolve(p)
                    self.assertIn(p["in"], ("query", "header", "path", "cookie"))
                    if p["in"] == "path":
                        self.assertIn("{%s}" % p["name"], path)
        # every schema compiles as JSON Schema 2020-12 with the document's references resolvable
        for name, schema in doc["components"]["schemas"].items():
            with self.subTest(schema=name):
                oc.spec().validator(schema).is_valid(None)  # raises when a reference does not resolve
        # every local reference points somewhere
        with open(oc.SPEC_PATH, encoding="utf-8") as f:
            text = f.read()
        for ref in set(re.findall(r"\$ref: '(#/[^']+)'", text)):
            oc.spec().resolve({"$ref": ref})

    def test_every_sse_event_the_program_can_send_is_documented(self):
        src = os.path.join(os.path.dirname(oc.SPEC_PATH), "..", "src", "sse", "events.cpp")
        with open(src, encoding="utf-8") as f:
            names = set(re.findall(r'(?:make|build)_frame\("([a-z_]+)"', f.read()))
        self.assertTrue(names)
        self.assertEqual(names, set(oc.spec().sse_events), "events in src/sse/events.cpp vs x-sse-events")


class CheckerHasTeethTest(unittest.TestCase):
    JSON = [("content-type", "application/json")]

    def mismatch(self, fn):
        with self.assertRaises(oc.OpenApiMismatch):
            fn()

    def test_rejects_what_the_document_does_not_say(self):
        ok = Response(200, "OK", self.JSON, b'{"ready":true,"pod_id":"p1"}')
        oc.check_response("GET", "/ready", ok)
        self.mismatch(lambda: oc.check_response("GET", "/ready", Response(
            200, "OK", self.JSON, b'{"ready":true,"pod_id":"p1","extra":1}')))
        self.mismatch(lambda: oc.check_response("GET", "/ready", Response(418, "", self.JSON, b"{}")))
        self.mismatch(lambda: oc.check_response("GET", "/ready", Response(
            200, "OK", [("content-type", "text/plain")], b"ready")))
        self.mismatch(lambda: oc.check_response("GET", "/nope", Response(
            404, "", self.JSON, b'{"error":{"code":"forbidden","message":"x"}}')))
        self.mismatch(lambda: oc.check_response("PUT", "/api/chat", Response(
            405, "", self.JSON, b'{"error":{"code":"method_not_allowed","message":"x"}}')))  # no Allow
        self.mismatch(lambda: oc.check_response("POST", "/api/chat", Response(
            503, "", self.JSON, b'{"error":{"code":"unavailable","message":"x"}}')))  # no Retry-After

    def test_rejects_unknown_or_malformed_events(self):
        chunk = ('{"session_id":"s","message_id":"m","chunk_id":0,"chunk":"a","chunk_type":"content",'
                 '"is_final":false,"timestamp":""}')
        oc.check_event("chunk", chunk)
        self.mismatch(lambda: oc.check_event("chunk", chunk.replace('"content"', '"weird"')))
        self.mismatch(lambda: oc.check_event("chunk", chunk.replace('"chunk_id":0', '"chunk_id":-1')))
        self.mismatch(lambda: oc.check_event("surprise", "{}"))
        self.mismatch(lambda: oc.check_event("ping", '{"timestamp":"1"}'))
        self.mismatch(lambda: oc.check_event("message_complete",
                                             '{"message_id":"m","token_count":1,"finish_reason":"done",'
                                             '"status":"complete"}'))


class EveryRouteTest(h.ChatdTestCase):
    """One pass over every documented route and event; the harness validates each answer."""

    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("openapi-routes", env={"SSE_HEARTBEAT_INTERVAL": "200ms",
                                                          "WORKER_DEMO_CHUNK_DELAY": "20ms"})

    def setUp(self):
        super().setUp()
        oc.checked.clear()

    def seen(self, key):
        self.assertTrue(oc.checked.get(key), "%r was not validated; validated: %r" % (key, sorted(oc.checked)))

    def test_routes_and_events(self):
        srv, sid, uid = self.srv, h.new_id("s"), h.new_id("u")
        self.assertEqual(srv.get("/").status, 200)
        self.assertEqual(srv.get("/health").status, 200)
        self.assertEqual(srv.get("/ready").status, 200)
        self.assertEqual(srv.get("/openapi.yaml").status, 200)
        self.assertEqual(srv.request("OPTIONS", "/api/chat").status, 204)
        self.assertEqual(srv.get("/no/such/path").status, 404)
        self.assertEqual(srv.request("PUT", "/api/sessions").status, 405)

        # a whole reply, with pings while it streams
        c, _ = self.open_sse(srv, sid, uid)
        acc = srv.chat_ok(sid, uid, "openapi " * 40)
        c.collect_until(h.is_complete_for(acc["message_id"]), 30)
        c.collect_until(lambda e: e.event == "ping", 5)
        # errors of POST /api/chat
        self.assertEqual(srv.post_json("/api/chat", {"session_id": sid}).status, 400)
        self.assertEqual(srv.request("POST", "/api/chat", "{}", {"Content-Type": "text/plain"}).status, 415)
        self.assertEqual(srv.chat(sid, h.new_id("other"), "not yours").status, 403)
        # a provider error: the reply ends with an error event
        bad = srv.chat_ok(sid, uid, "which provider?", ai_provider="nope")
        c.collect_until(h.is_complete_for(bad["message_id"]), 15)
        c.collect_until(lambda e: e.event == "message_complete" and e.json()["message_id"] == bad["message_id"], 15)

        # history
        self.assertEqual(srv.get("/api/sessions?user_id=%s" % uid).status, 200)
        self.assertEqual(srv.get("/api/sessions?user_id=%s&limit=0" % uid).status, 400)
        page = srv.get("/api/sessions/%s/messages?user_id=%s&limit=1" % (sid, uid))
        self.assertEqual(page.status, 200)
        older = page.json()["next_before"]
        self.assertIsNotNone(older)
        self.assertEqual(srv.get("/api/sessions/%s/messages?user_id=%s&before=%s" % (sid, uid, older)).status, 200)
        self.assertEqual(srv.get("/api/sessions/%s/messages?user_id=x" % sid).status, 404)
        self.assertEqual(srv.get("/api/sessions/%s/messages?user_id=%s" % (h.new_id("none"), uid)).status, 404)

        # cancel: a running reply (202), the same again after it ended (202), a reply nobody runs
        # (404), bad id (400)
        run = srv.chat_ok(sid, uid, " ".join("w%d" % i for i in range(600)))
        c.collect_until(lambda e: e.event == "chunk" and e.json()["message_id"] == run["message_id"], 10)
        r = srv.request("POST", "/api/chat/%s/cancel?user_id=%s" % (run["message_id"], uid))
        self.assertEqual(r.status, 202, r)
        c.collect_until(lambda e: e.event == "message_complete" and e.json()["message_id"] == run["message_id"], 15)
        self.assertEqual(srv.request("POST", "/api/chat/%s/cancel?user_id=%s" % (run["message_id"], uid)).status,
                         202)
        self.assertEqual(srv.request("POST", "/api/chat/%s/cancel?user_id=%s" % (h.new_id("msg"), uid)).status, 404)
        self.assertEqual(srv.request("POST", "/api/chat/a.b/cancel?user_id=%s" % uid).status, 400)

        # a resume cursor this pod never held: the stream still opens and validates
        r2 = self.track(srv.sse(sid, uid, headers={"Last-Event-ID": "msg_000000000000000000000000:3"}))
        r2.connected()
        self.assertEqual(self.track(srv.sse(sid, "x")).open().status, 404)
        # a server-made session id
        self.assertEqual(srv.post_json("/api/sessions", {"user_id": uid}).status, 201)

        # delete: 404 for another user, 200 for the owner (the stream gets reset and closes), 404 after
        self.assertEqual(srv.request("DELETE", "/api/sessions/%s?user_id=x" % sid).status, 404)
        self.assertEqual(srv.request("DELETE", "/api/sessions/%s?user_id=%s" % (sid, uid)).status, 200)
        c.collect_until(lambda e: e.event == "reset", 10)
        self.assertEqual(srv.request("DELETE", "/api/sessions/%s?user_id=%s" % (sid, uid)).status, 404)

        for key in ("GET / 200", "GET /health 200", "GET /ready 200", "GET /openapi.yaml 200",
                    "preflight /api/chat 204", "PUT /api/sessions (method not listed) 405",
                    "POST /api/chat 202", "POST /api/chat 400", "POST /api/chat 403", "POST /api/chat 415",
                    "GET /api/sse 200", "GET /api/sse 404", "POST /api/sessions 201",
                    "GET /api/sessions 200", "GET /api/sessions 400",
                    "GET /api/sessions/{session_id}/messages 200",
                    "GET /api/sessions/{session_id}/messages 404",
                    "POST /api/chat/{message_id}/cancel 202", "POST /api/chat/{message_id}/cancel 404",
                    "POST /api/chat/{message_id}/cancel 400",
                    "DELETE /api/sessions/{session_id} 200",
                    "DELETE /api/sessions/{session_id} 404",
                    "event connected", "event chunk", "event message_complete", "event error", "event ping",
                    "event reset"):
            self.seen(key)


if __name__ == "__main__":
    unittest.main()
