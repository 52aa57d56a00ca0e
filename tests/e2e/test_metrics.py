"""Prometheus metrics of the real chatd and chat-worker under load: the text passes
`promtool check metrics`, and the counters move as the traffic says. Also checks the
shipped Prometheus configuration and alert rules with promtool."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from infra import Cluster, ClusterTestCase, StartError, free_port, http_request, wait_until  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def promtool():
    tool = shutil.which("promtool")
    if not tool:
        raise AssertionError("promtool is not installed (Debian package prometheus; scripts/install-deps.sh installs it)")
    return tool


def lint(tc, text, what):
    r = subprocess.run([promtool(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    tc.assertEqual(r.returncode, 0, "%s: promtool check metrics: %s%s" % (what, r.stdout.decode(), r.stderr.decode()))


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = frozenset()
        if m.group(2):
            labels = frozenset(tuple(kv.split("=", 1)) for kv in re.findall(r'[a-zA-Z_]+="(?:[^"\\]|\\.)*"', m.group(2)))
            labels = frozenset((k, v.strip('"')) for k, v in labels)
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(s, name, **labels):
    want = frozenset(labels.items())
    return sum(v for (n, l), v in s.items() if n == name and want <= l)


class ChatdMetricsTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("metrics", env={"WORKER_DEMO_CHUNK_DELAY": "5ms"})

    def scrape(self):
        r = self.srv.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("content-type") or "").startswith("text/plain; version=0.0.4"), r)
        text = r.body.decode()
        lint(self, text, "chatd")
        return samples(text)

    def test_counters_move_as_the_traffic_says(self):
        before = self.scrape()
        uid, sid = h.new_id("u"), h.new_id("s")
        stream = self.track(self.srv.sse(sid, uid))
        stream.connected()
        n = 6
        ids = []
        lock = threading.Lock()

        def post(i):
            acc = self.srv.chat_ok(sid, uid, "metrics question number %d" % i)
            with lock:
                ids.append(acc["message_id"])
        threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stream.collect_until(h.is_complete_all(ids), 60)
        for mid in ids:
            self.srv.wait_message_row(mid, "complete")
        bad = self.srv.request("POST", "/api/chat", b"{}", headers={"Content-Type": "application/json"})
        self.assertEqual(bad.status, 400)
        after = wait_until(lambda: (lambda s: s if value(s, "chat_replies_stored_total") -
                                    value(before, "chat_replies_stored_total") >= n else None)(self.scrape()),
                           20.0, msg="replies counted as stored")
        d = lambda name, **l: value(after, name, **l) - value(before, name, **l)  # noqa: E731
        self.assertEqual(d("chat_http_requests_total", route="/api/chat", code="202"), n)
        self.assertEqual(d("chat_http_requests_total", route="/api/chat", code="400"), 1)
        self.assertEqual(d("chat_http_requests_total", route="/api/sse", code="200"), 1)
        self.assertEqual(d("chat_replies_stored_total"), n)
        self.assertEqual(d("chat_replies_stored_by_status_total", status="complete"), n)
        self.assertEqual(d("chat_time_to_first_chunk_seconds_count"), n, "one first chunk per accepted reply")
        chunks = sum(len([e for e in stream.events if e.event == "chunk" and e.json()["message_id"] == m]) for m in ids)
        self.assertEqual(d("chat_chunks_released_total"), chunks)
        self.assertGreaterEqual(d("chat_chunk_delivery_seconds_count"), chunks, "every chunk written is timed")
        self.assertEqual(value(after, "chat_sse_connections"), 1)
        self.assertEqual(value(after, "chat_dependency_up", dependency="store"), 1)
        self.assertGreater(value(after, "process_resident_memory_bytes"), 1e6)
        self.assertGreater(d("chat_provider_requests_total", provider="demo"), n - 1)
        self.assertGreater(d("chat_provider_tokens_total", provider="demo"), 0)
        for (name, labels) in after:
            for k, v in labels:
                self.assertNotRegex(v, r"^(msg|s|u|conn)_[0-9a-f]{6,}", "%s has an id as a label value: %s=%s" % (name, k, v))

    def test_a_slow_client_cut_is_counted(self):
        before = self.scrape()
        srv = self.start_server("slowcut", env={"SSE_MAX_QUEUE_BYTES": "4096", "WORKER_DEMO_CHUNK_DELAY": "0ms",
                                                "WORKER_DEMO_WORDS_PER_CHUNK": "1"})
        uid, sid = h.new_id("u"), h.new_id("s")
        c = self.track(srv.sse(sid, uid, rcvbuf=2048))
        c.connected()
        cut = lambda: value(samples(srv.get("/metrics").body.decode()), "chat_sse_streams_ended_total",  # noqa: E731
                            reason="slow_client") >= 1
        # The client reads nothing: what the kernel takes first (its send buffer, ~1 MB) is no
        # concern of the queue; after that every ~20 KB reply waits in it, past its 4 KB.
        for n in range(200):
            srv.chat_ok(sid, uid, "x" * 20000 + " %d" % n)
            if n % 10 == 9 and cut():
                break
        wait_until(cut, 30.0, msg="the cut counted")
        self.assertEqual(value(before, "chat_sse_streams_ended_total", reason="slow_client"), 0)


    def test_each_stream_gets_the_configured_socket_send_buffer(self):
        # What the kernel holds for a client before events wait in the queue (docs/API.md
        # section 4.6). Read back from the kernel with ss: Linux grants twice what is asked.
        for asked, granted in (("8192", lambda tb: tb == 16384), ("0", lambda tb: tb != 2 * 512 * 1024),
                               (None, lambda tb: tb >= 2 * 512 * 1024 or tb == 2 * int(sysctl("net.core.wmem_max")))):
            env = {} if asked is None else {"SSE_SOCKET_SEND_BUFFER": asked}
            srv = self.start_server("sndbuf-%s" % asked, env=env)
            c = self.track(srv.sse(h.new_id("s"), h.new_id("u")))
            c.connected()
            tb = stream_send_buffer(srv.port)
            self.assertTrue(granted(tb), "SSE_SOCKET_SEND_BUFFER=%s: the stream's socket has a %d-byte send buffer"
                            % (asked, tb))


def sysctl(name):
    with open("/proc/sys/" + name.replace(".", "/")) as f:
        return f.read().split()[0]


def stream_send_buffer(port):
    """The send buffer (ss's skmem tb) of the server's one established socket on this port."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    sizes = [int(m) for m in re.findall(r"\btb(\d+)", out)]
    if len(sizes) != 1:
        raise AssertionError("expected one established socket on port %d, ss says:\n%s" % (port, out))
    return sizes[0]


class WorkerMetricsTest(ClusterTestCase):
    def test_worker_serves_probes_and_metrics(self):
        port = free_port()
        cl = self.new_cluster(pods=1, workers=0)
        w = cl.add_worker(env={"WORKER_HTTP_PORT": str(port), "WORKER_DEMO_CHUNK_DELAY": "5ms"})
        pod = cl.pod("pod-a")
        sid, uid = h.new_id("s"), h.new_id("u")
        c = self.track(pod.sse(sid, uid))
        c.connected()
        acc = pod.chat_ok(sid, uid, "count me on the worker")
        c.collect_until(h.is_complete_for(acc["message_id"]), 30)
        self.assertEqual(http_request(port, "GET", "/health", openapi=False).status, 200)
        self.assertEqual(http_request(port, "GET", "/ready", openapi=False).status, 200)

        def worker_samples():
            r = http_request(port, "GET", "/metrics", openapi=False)  # chat-worker, not chatd
            self.assertEqual(r.status, 200)
            text = r.body.decode()
            lint(self, text, "chat-worker")
            return samples(text)

        # The reply counts as done on the worker once its last chunk is in the chunk log too,
        # a moment after the client saw it end.
        wait_until(lambda: value(worker_samples(), "chat_worker_replies_total") >= 1, 10,
                   msg="the worker never counted the reply")
        s = worker_samples()
        self.assertGreaterEqual(value(s, "chat_provider_requests_total", provider="demo"), 1)
        self.assertEqual(value(s, "chat_worker_slots_in_use"), 0)
        self.assertEqual(value(s, "chat_dependency_up", dependency="work_queue", backend="jetstream"), 1)
        self.assertTrue(w.alive())

        def health():
            r = http_request(port, "GET", "/health", openapi=False)
            self.assertEqual(r.status, 200)
            return json.loads(r.body)

        self.assertEqual(health()["status"], "healthy")
        cl.redis.stop()
        wait_until(lambda: not health()["registry_connected"], 15, msg="the worker never saw Redis go")
        self.assertEqual(health()["status"], "degraded", "a dependency is away, as a pod would say")
        self.assertEqual(http_request(port, "GET", "/ready", openapi=False).status, 200,
                         "without Redis the worker still serves through the broadcast subject")
        cl.redis.start()
        wait_until(lambda: health()["status"] == "healthy", 30, msg="the worker never saw Redis back")

    def test_a_worker_that_cannot_serve_its_probes_exits_before_it_takes_work(self):
        cl = self.new_cluster(pods=1, workers=0)
        pod = cl.pod("pod-a")
        sid, uid = h.new_id("s"), h.new_id("u")
        c = self.track(pod.sse(sid, uid))
        c.connected()
        acc = pod.chat_ok(sid, uid, "wait in the queue")
        taken = socket.socket()
        try:
            taken.bind(("0.0.0.0", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with self.assertRaises(StartError) as refused:
                cl.add_worker(env={"WORKER_HTTP_PORT": str(port)})
            self.assertIn("WORKER_HTTP_PORT: cannot listen on port %d" % port, str(refused.exception))
        finally:
            taken.close()
        # Had the worker taken the request before it exited, it would come back
        # only after JS_ACK_WAIT (30 s).
        cl.add_worker()
        c.collect_until(h.is_complete_for(acc["message_id"]), 15)


class ShippedConfigTest(unittest.TestCase):
    def test_prometheus_config_and_alert_rules_are_valid(self):
        for args in (["check", "config", os.path.join(ROOT, "deploy/prometheus/prometheus.yml")],
                     ["check", "rules", os.path.join(ROOT, "deploy/prometheus/alerts.yml")]):
            r = subprocess.run([promtool()] + args, capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, "promtool %s: %s%s" % (" ".join(args), r.stdout.decode(), r.stderr.decode()))

    def test_the_dashboard_names_only_metrics_the_programs_have(self):
        import json
        with open(os.path.join(ROOT, "deploy/grafana/chat.json")) as f:
            dash = json.load(f)
        exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
        names = set(re.findall(r"\b(chat_[a-z_]+|process_[a-z_]+)", exprs))
        sources = ""
        for d in ("src", "apps"):
            for dirpath, _, files in os.walk(os.path.join(ROOT, d)):
                for f in files:
                    if f.endswith((".cpp", ".hpp")):
                        with open(os.path.join(dirpath, f)) as source:
                            sources += source.read()
        for n in sorted(names):
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            self.assertTrue('"%s"' % base in sources, "the dashboard uses %s, which no program exports" % n)


if __name__ == "__main__":
    unittest.main()
