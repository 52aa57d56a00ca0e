"""OpenTelemetry traces of the real chatd and chat-worker, exported over OTLP/HTTP JSON to
a local receiver that checks the wire format: one chat is one trace that joins both
programs' spans with correct parent links, the provider call carries the trace on to the
provider (a local server speaking OpenAI's streaming format), and a collector that is down
costs spans, never chats."""

import http.server
import json
import os
import re
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from infra import Cluster, ClusterTestCase, run_to_exit, wait_until  # noqa: E402

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
DIGITS = re.compile(r"^[0-9]+$")
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def check_any_value(v, where):
    kinds = [k for k in ("stringValue", "intValue", "boolValue", "doubleValue") if k in v]
    if len(kinds) != 1:
        raise AssertionError("%s: an AnyValue needs exactly one of its fields: %r" % (where, v))
    if kinds[0] == "intValue" and not DIGITS.match(str(v["intValue"]).lstrip("-")):
        raise AssertionError("%s: intValue %r" % (where, v))


def check_attributes(attrs, where):
    if not isinstance(attrs, list):
        raise AssertionError("%s: attributes must be a list" % where)
    for a in attrs:
        if not isinstance(a.get("key"), str) or not a["key"]:
            raise AssertionError("%s: attribute without a key: %r" % (where, a))
        check_any_value(a.get("value", {}), "%s.%s" % (where, a["key"]))


def check_export(body):
    """The OTLP JSON of an ExportTraceServiceRequest (opentelemetry-proto's JSON mapping);
    returns its spans with 'service' added."""
    spans = []
    for rs in body["resourceSpans"]:
        attrs = rs["resource"]["attributes"]
        check_attributes(attrs, "resource")
        service = {a["key"]: a["value"].get("stringValue") for a in attrs}.get("service.name")
        if not service:
            raise AssertionError("resource without service.name: %r" % attrs)
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                where = "span %r" % s.get("name")
                if not HEX32.match(s["traceId"]) or s["traceId"] == "0" * 32:
                    raise AssertionError("%s: traceId %r" % (where, s["traceId"]))
                if not HEX16.match(s["spanId"]) or s["spanId"] == "0" * 16:
                    raise AssertionError("%s: spanId %r" % (where, s["spanId"]))
                if "parentSpanId" in s and not HEX16.match(s["parentSpanId"]):
                    raise AssertionError("%s: parentSpanId %r" % (where, s["parentSpanId"]))
                if not s.get("name") or s.get("kind") not in (1, 2, 3, 4, 5):
                    raise AssertionError("%s: name or kind %r" % (where, s))
                for t in ("startTimeUnixNano", "endTimeUnixNano"):
                    if not isinstance(s[t], str) or not DIGITS.match(s[t]):
                        raise AssertionError("%s: %s must be a decimal string: %r" % (where, t, s[t]))
                if int(s["startTimeUnixNano"]) > int(s["endTimeUnixNano"]):
                    raise AssertionError("%s ends before it starts" % where)
                check_attributes(s.get("attributes", []), where)
                if "status" in s and s["status"].get("code") not in (0, 1, 2):
                    raise AssertionError("%s: status %r" % (where, s["status"]))
                spans.append(dict(s, service=service))
    return spans


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))


class _LocalServer:
    """An HTTP server on a free local port, serving `handler` from a thread of its own."""

    def serve(self, handler):
        self.server = http.server.ThreadingHTTPServer((h.HOST, 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return "http://%s:%d" % (h.HOST, self.server.server_address[1])

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class OtlpReceiver(_LocalServer):
    """POST /v1/traces with Content-Type application/json; anything else is a failure."""

    def __init__(self):
        receiver = self
        self.spans = []
        self.errors = []
        self.lock = threading.Lock()

        class Handler(_Handler):
            def do_POST(self):
                body = self._body()
                try:
                    if self.path != "/v1/traces":
                        raise AssertionError("export to %r" % self.path)
                    if self.headers.get("Content-Type") != "application/json":
                        raise AssertionError("Content-Type %r" % self.headers.get("Content-Type"))
                    spans = check_export(json.loads(body))
                    with receiver.lock:
                        receiver.spans.extend(spans)
                except Exception as e:  # noqa: BLE001
                    with receiver.lock:
                        receiver.errors.append(repr(e))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.endpoint = self.serve(Handler)

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]


class FakeOpenAI(_LocalServer):
    """Streams a fixed reply in OpenAI's Chat Completions SSE format; keeps each request's headers."""

    WORDS = ["Traced ", "hello ", "from ", "the ", "provider."]

    def __init__(self):
        fake = self
        self.headers = []

        class Handler(_Handler):
            def do_POST(self):
                self._body()
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()

                def event(obj):
                    self.wfile.write(("data: %s\n\n" % json.dumps(obj)).encode())
                    self.wfile.flush()

                for w in FakeOpenAI.WORDS:
                    event({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                           "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
                event({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                event({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.base_url = self.serve(Handler) + "/v1"


def by_name(spans, name):
    found = [s for s in spans if s["name"] == name]
    if len(found) != 1:
        raise AssertionError("expected one span %r, got %d: %r" % (name, len(found), [s["name"] for s in spans]))
    return found[0]


def attribute(span, key):
    for a in span.get("attributes", []):
        if a["key"] == key:
            return next(iter(a["value"].values()))
    return None


class DistributedTraceTest(ClusterTestCase):
    """chatd and chat-worker over NATS JetStream, both exporting to one receiver."""

    @classmethod
    def setUpClass(cls):
        cls.receiver = OtlpReceiver()
        cls.provider = FakeOpenAI()
        otel = dict(FAST_EXPORT, OTEL_EXPORTER_OTLP_ENDPOINT=cls.receiver.endpoint)
        cls.cluster = Cluster(pods=1, workers=1, pod_env=otel,
                              worker_env=dict(otel, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=cls.provider.base_url))
        cls.cluster.start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        cls.provider.close()
        cls.receiver.close()

    def chat_and_wait(self, headers=None):
        pod = self.cluster[0]
        session, user = h.new_id("s"), h.new_id("u")
        r = pod.post_json("/api/chat", {"session_id": session, "user_id": user, "message": "hi",
                                        "ai_provider": "openai"}, headers=headers)
        self.assertEqual(r.status, 202, r.body)
        reply = r.json()["message_id"]
        pod.wait_message_row(reply, "complete", timeout=60)
        return reply

    def wait_trace(self, trace_id, names):
        def complete():
            got = {s["name"] for s in self.receiver.trace(trace_id)}
            return names <= got
        wait_until(complete, 30, msg="spans %s of trace %s; have %r" % (
            sorted(names), trace_id, sorted(s["name"] for s in self.receiver.trace(trace_id))))
        self.assertEqual(self.receiver.errors, [])
        return self.receiver.trace(trace_id)

    def test_one_chat_is_one_trace_across_pod_worker_and_provider(self):
        reply = self.chat_and_wait({"traceparent": "00-%s-%s-01" % (CALLER_TRACE, CALLER_SPAN),
                                    "tracestate": "caller=1"})
        spans = self.wait_trace(CALLER_TRACE, {"POST /api/chat", "chat.store_user_message", "chat.publish_request",
                                               "chat.generate", "provider openai", "chat.first_chunk",
                                               "chat.store_reply"})
        http_span = by_name(spans, "POST /api/chat")
        self.assertEqual(http_span["service"], "chatd")
        self.assertEqual(http_span["parentSpanId"], CALLER_SPAN)  # the caller's span
        self.assertEqual(http_span["kind"], 2)
        self.assertEqual(http_span["traceState"], "caller=1")
        self.assertEqual(attribute(http_span, "http.response.status_code"), "202")
        for name, kind in (("chat.store_user_message", 3), ("chat.publish_request", 4), ("chat.first_chunk", 1),
                           ("chat.store_reply", 3)):
            s = by_name(spans, name)
            self.assertEqual((s["service"], s["parentSpanId"], s["kind"]), ("chatd", http_span["spanId"], kind), name)
        self.assertEqual(attribute(by_name(spans, "chat.store_reply"), "chat.message_id"), reply)
        publish = by_name(spans, "chat.publish_request")
        generate = by_name(spans, "chat.generate")
        self.assertEqual((generate["service"], generate["parentSpanId"], generate["kind"]),
                         ("chat-worker", publish["spanId"], 5))
        self.assertEqual(attribute(generate, "chat.message_id"), reply)
        call = by_name(spans, "provider openai")
        self.assertEqual((call["service"], call["parentSpanId"], call["kind"]), ("chat-worker", generate["spanId"], 3))
        self.assertEqual(attribute(call, "gen_ai.usage.output_tokens"), "5")
        # The provider got the trace, with the call's own span as its parent.
        sent = [hd for hd in self.provider.headers if CALLER_TRACE in hd.get("traceparent", "")]
        self.assertEqual(len(sent), 1, self.provider.headers)
        self.assertEqual(sent[0]["traceparent"], "00-%s-%s-01" % (CALLER_TRACE, call["spanId"]))
        self.assertEqual(sent[0].get("tracestate"), "caller=1")
        self.assertEqual(len({s["spanId"] for s in spans}), len(spans), "span ids repeat")

    def test_a_request_without_traceparent_starts_a_trace_the_worker_joins(self):
        before = len(self.provider.headers)
        self.chat_and_wait()
        wait_until(lambda: len(self.provider.headers) > before, 30)
        traceparent = self.provider.headers[-1]["traceparent"]
        trace_id = traceparent.split("-")[1]
        self.assertNotEqual(trace_id, CALLER_TRACE)
        spans = self.wait_trace(trace_id, {"POST /api/chat", "chat.generate", "provider openai"})
        self.assertNotIn("parentSpanId", by_name(spans, "POST /api/chat"))

    def test_a_malformed_traceparent_is_ignored(self):
        before = len(self.provider.headers)
        self.chat_and_wait({"traceparent": "00-%s-%s-01" % ("0" * 32, CALLER_SPAN)})
        wait_until(lambda: len(self.provider.headers) > before, 30)
        trace_id = self.provider.headers[-1]["traceparent"].split("-")[1]
        self.assertNotEqual(trace_id, "0" * 32)
        spans = self.wait_trace(trace_id, {"POST /api/chat"})
        self.assertNotIn("parentSpanId", by_name(spans, "POST /api/chat"))

    def test_an_unsampled_caller_is_respected_end_to_end(self):
        unsampled = "1" * 32
        before = len(self.provider.headers)
        self.chat_and_wait({"traceparent": "00-%s-%s-00" % (unsampled, CALLER_SPAN)})
        wait_until(lambda: len(self.provider.headers) > before, 30)
        # Propagated with the decision, but nobody records it.
        self.assertEqual(self.provider.headers[-1]["traceparent"].split("-")[1], unsampled)
        self.assertTrue(self.provider.headers[-1]["traceparent"].endswith("-00"))
        time.sleep(0.5)  # two export intervals: anything recorded would have arrived
        self.assertEqual(self.receiver.trace(unsampled), [])


def closed_port():
    s = socket.socket()
    s.bind((h.HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class EmbeddedTraceTest(h.ChatdTestCase):
    def test_the_in_process_bus_carries_the_trace_to_the_built_in_worker(self):
        receiver = OtlpReceiver()
        self.addCleanup(receiver.close)
        srv = self.start_server("traces", env=dict(FAST_EXPORT, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                                                   OTEL_SERVICE_NAME="chat-embedded",
                                                   WORKER_DEMO_CHUNK_DELAY="5ms"))
        session, user = h.new_id("s"), h.new_id("u")
        r = srv.post_json("/api/chat", {"session_id": session, "user_id": user, "message": "hello"},
                          headers={"traceparent": "00-%s-%s-01" % (CALLER_TRACE, CALLER_SPAN)})
        self.assertEqual(r.status, 202, r.body)
        srv.wait_message_row(r.json()["message_id"], "complete")
        wait_until(lambda: {"chat.generate", "chat.store_reply"} <= {s["name"] for s in receiver.trace(CALLER_TRACE)},
                   30, msg="spans of the embedded trace")
        spans = receiver.trace(CALLER_TRACE)
        self.assertEqual(receiver.errors, [])
        self.assertEqual({s["service"] for s in spans}, {"chat-embedded"})
        self.assertEqual(by_name(spans, "chat.generate")["parentSpanId"],
                         by_name(spans, "chat.publish_request")["spanId"])
        self.assertEqual(by_name(spans, "provider demo")["parentSpanId"], by_name(spans, "chat.generate")["spanId"])
        # Probes are not traced.
        srv.health()
        srv.get("/metrics")
        time.sleep(0.3)
        self.assertFalse([s for s in receiver.spans if "/health" in s["name"] or "/metrics" in s["name"]])

    def test_a_collector_that_is_down_costs_spans_not_chats(self):
        srv = self.start_server("traces-down", env=dict(FAST_EXPORT, WORKER_DEMO_CHUNK_DELAY="0",
                                                        OTEL_EXPORTER_OTLP_ENDPOINT="http://%s:%d" % (h.HOST, closed_port())))
        ids = []
        for i in range(5):
            ids.append(srv.chat_ok(h.new_id("s"), h.new_id("u"), "hello %d" % i)["message_id"])
        for m in ids:
            srv.wait_message_row(m, "complete")

        def dropped():
            text = srv.get("/metrics").body.decode()
            m = re.search(r'^chat_trace_spans_dropped_total\{reason="export_failed"\} (\S+)$', text, re.M)
            return m and float(m.group(1)) > 0
        wait_until(dropped, 30, msg="spans counted as dropped")
        self.assertIn("trace_export_failed", srv.log())

    def test_bad_tracing_settings_stop_the_start_with_a_clear_error(self):
        for env, says in (({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
                          ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
                          ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
                          ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
                          ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_HEADERS")):
            for program in ("pod", "worker"):
                code, output = run_to_exit(program, dict(env, NATS_URL="nats://127.0.0.1:1"))
                self.assertEqual(code, 2, (program, env, output))
                self.assertIn(says, output)


if __name__ == "__main__":
    unittest.main()
