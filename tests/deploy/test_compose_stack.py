"""The Compose stack of docker-compose.yml, up and healthy (scripts/test-deploy.sh starts it):
a chat through the load balancer on port 80 with two devices on different pods, one backend
container restarted in the middle of the reply; the reply must reach both devices whole
(the restarted pod's device resumes on another pod with Last-Event-ID), and be stored once.

Uses the e2e harness, so every answer and event is also validated against docs/openapi.yaml.

Environment: DEPLOY_PROJECT (the compose project), DEPLOY_HTTP_PORT (default 80).
"""

import json
import os
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness as h  # noqa: E402

PORT = int(os.environ.get("DEPLOY_HTTP_PORT", "80"))
PROJECT = os.environ.get("DEPLOY_PROJECT", "chatd-deploy-test")
COMPOSE = ["docker-compose", "-p", PROJECT, "-f", os.path.join(ROOT, "docker-compose.yml")]


def compose(*args, timeout=120):
    out = subprocess.run(COMPOSE + list(args), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError("%s -> %s: %s" % (" ".join(args), out.returncode, out.stderr[-2000:]))
    return out.stdout


def container(service):
    ids = compose("ps", "-q", service).split()
    if len(ids) != 1:
        raise AssertionError("service %s has containers %r" % (service, ids))
    return ids[0]


def health_of(service):
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", container(service)],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def psql(sql):
    return compose("exec", "-T", "postgres", "psql", "-U", "postgres", "-d", "chat", "-tAc", sql).strip()


def sse_path(session_id, user_id):
    return "/api/sse?" + urllib.parse.urlencode({"session_id": session_id, "user_id": user_id})


class Device:
    """One client of the session; reconnects with Last-Event-ID when its stream ends, as EventSource does."""

    def __init__(self, tc, session_id, user_id):
        self.tc, self.session_id, self.user_id = tc, session_id, user_id
        self.events = []       # every event of every connection, in order
        self.pods = []         # pod of each connection
        self.last_id = None
        self.client = None
        self.connect()

    def connect(self, deadline=None):
        deadline = deadline or time.monotonic() + 30
        while True:
            headers = {"Last-Event-ID": self.last_id} if self.last_id else None
            try:
                c = h.SSEClient(PORT, sse_path(self.session_id, self.user_id), headers=headers)
                c.open(5)
                if c.status == 200:
                    data = c.connected(5)
                    self.client = c
                    self.pods.append(data["pod_id"])
                    return data["pod_id"]
                c.close()
                last = "%s %r" % (c.status, c.body[:200])
            except (OSError, h.SSEClosed, h.SSETimeout, AssertionError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise AssertionError("device could not reconnect within 30 s: %s" % last)
            time.sleep(0.5)

    def read_until(self, predicate, timeout, reconnect=False):
        """Events until predicate; when the stream ends and reconnect is set, resumes on a new connection."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("condition not met in %.0f s; last events %r" % (timeout, self.events[-5:]))
            try:
                ev = self.client.next_event(min(left, 5))
            except h.SSETimeout:
                continue
            except h.SSEClosed:
                if not reconnect:
                    raise
                self.client.close()
                self.connect()
                continue
            self.events.append(ev)
            if ev.id:
                self.last_id = ev.id
            if predicate(ev):
                return ev

    def reply(self, message_id):
        chunks = [e.json() for e in self.events if e.event == "chunk" and e.json()["message_id"] == message_id]
        done = [e.json() for e in self.events if e.event == "message_complete" and e.json()["message_id"] == message_id]
        errors = [e for e in self.events if e.event == "error"]
        self.tc.assertFalse(errors, "error events: %r" % errors)
        ids = [c["chunk_id"] for c in chunks]
        self.tc.assertEqual(ids, list(range(len(ids))), "chunk ids (gaps or duplicates): %r" % ids)
        self.tc.assertTrue(chunks and chunks[-1]["is_final"], "the final chunk is missing")
        self.tc.assertEqual(len(done), 1, "message_complete events: %r" % done)
        self.tc.assertEqual(done[0]["status"], "complete")
        return "".join(c["chunk"] for c in chunks if c["chunk_type"] == "content")

    def close(self):
        if self.client:
            self.client.close()


class ComposeStackTest(unittest.TestCase):
    def test_1_stack_is_distributed_and_healthy(self):
        r = h.http_request(PORT, "GET", "/health")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["mode"], "distributed", body)
        self.assertEqual(body["components"]["work_queue"], "jetstream", body)
        self.assertTrue(body["nats_connected"] and body["redis_connected"] and body["db_connected"], body)
        served = h.http_request(PORT, "GET", "/openapi.yaml")
        with open(os.path.join(ROOT, "docs", "openapi.yaml"), "rb") as f:
            self.assertEqual(served.body, f.read(), "the image serves this checkout's docs/openapi.yaml")
        # the load balancer spreads requests over the three pods
        pods = set()
        for _ in range(30):
            pods.add(h.http_request(PORT, "GET", "/ready").json()["pod_id"])
        self.assertEqual(pods, {"pod-1", "pod-2", "pod-3"})

    def test_2_chat_across_a_backend_restart(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        a = Device(self, sid, uid)
        b = Device(self, sid, uid)
        try:
            for _ in range(10):  # least_conn gives the second stream another pod; make sure of it
                if b.pods[-1] != a.pods[-1]:
                    break
                b.close()
                b = Device(self, sid, uid)
            self.assertNotEqual(a.pods[-1], b.pods[-1], "both devices on %s" % a.pods[-1])
            victim = "backend-" + a.pods[-1].split("-")[1]

            message = " ".join("word%d" % i for i in range(300))
            r = h.http_request(PORT, "POST", "/api/chat", json.dumps({"session_id": sid, "user_id": uid,
                                                                       "message": message}),
                               {"Content-Type": "application/json"})
            self.assertEqual(r.status, 202, r)
            mid = r.json()["message_id"]
            a.read_until(lambda e: e.event == "chunk" and e.json()["chunk_id"] >= 10, 30)

            restarted = {}

            def restart():
                t0 = time.monotonic()
                out = subprocess.run(["docker", "restart", "-t", "40", container(victim)],
                                     capture_output=True, text=True, timeout=120)
                restarted.update(rc=out.returncode, err=out.stderr, seconds=time.monotonic() - t0)

            t = threading.Thread(target=restart)
            t.start()
            end = lambda e: e.event == "message_complete" and e.json()["message_id"] == mid  # noqa: E731
            a.read_until(end, 60, reconnect=True)
            b.read_until(end, 60)
            t.join(120)
            self.assertEqual(restarted.get("rc"), 0, "docker restart %s: %r" % (victim, restarted))
            sys.stderr.write("restarted %s in %.1f s; device A on %s, device B on %s\n"
                             % (victim, restarted["seconds"], a.pods, b.pods))

            self.assertGreaterEqual(len(a.pods), 2, "device A was not handed off: %r" % a.pods)
            text_a, text_b = a.reply(mid), b.reply(mid)
            self.assertEqual(text_a, text_b, "the two devices saw different replies")
            self.assertIn("word299", text_a)

            # stored once, whole, as the devices saw it
            page = h.http_request(PORT, "GET", "/api/sessions/%s/messages?user_id=%s" % (sid, uid)).json()
            stored = [m for m in page["messages"] if m["message_id"] == mid]
            self.assertEqual(len(stored), 1, page)
            self.assertEqual(stored[0]["status"], "complete")
            self.assertEqual(stored[0]["content"], text_a)
            self.assertEqual(psql("SELECT count(*) FROM messages WHERE message_id = '%s'" % mid), "1")
            self.assertEqual(psql("SELECT count(*) FROM messages WHERE session_id = '%s'" % sid), "2")

            # the restarted pod is back: healthy, and its log shows the hand-off and a clean stop
            deadline = time.monotonic() + 60
            while health_of(victim) != "running healthy":
                self.assertLess(time.monotonic(), deadline, "%s not healthy again: %s" % (victim, health_of(victim)))
                time.sleep(1)
            log = compose("logs", "--no-color", victim)
            self.assertIn("streams_handed_off", log)
            self.assertIn("shutdown_started", log)
            # and the load balancer reaches it again (with the devices' streams closed: nginx's
            # least_conn sends short requests to the pod without open streams)
            a.close()
            b.close()
            pods = set()
            for _ in range(30):
                r = h.http_request(PORT, "GET", "/ready")
                if r.status == 200:
                    pods.add(r.json()["pod_id"])
            self.assertEqual(pods, {"pod-1", "pod-2", "pod-3"}, "nginx after the restart of %s" % victim)
        finally:
            a.close()
            b.close()


if __name__ == "__main__":
    unittest.main()
