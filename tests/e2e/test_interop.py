"""Interoperability: a seed-style worker written here in Python drives chatd pods (no chat-worker).

The worker does what the seed's Python demo worker does and nothing more: a core-NATS queue
subscription on chat.workflow.execute.* (group workflow-workers); per request SMEMBERS
session:connections:{id}, split each member at its LAST ':' for the pod id, publish every chunk to
each chat.pod.{pod}.response, or to chat.session.{id}.broadcast when the set is empty. Chunks carry
session_id, message_id, chunk_id, chunk, is_final; the last one (is_final) carries metadata
tokens_used. No replay handling, no chunk_type, no timestamps.

Run (from tests/e2e): CHATD_BIN=../../build/chatd python3 -m unittest -v test_interop
"""

import json
import sys
import threading
import time
import unittest

from harness import is_complete_for, new_id, reply_events
from infra import Cluster, ClusterTestCase, NatsClient, RedisClient, wait_until


class SeedWorker:
    CHUNK_DELAY = 0.02

    def __init__(self, nats_port, redis_port):
        self.redis_port = redis_port
        self.nats = NatsClient(nats_port, name="seed-python-worker")
        self.requests = []
        self.routes = {}          # message_id -> list of subjects per chunk
        self.errors = []
        self._threads = []
        self._stop = threading.Event()
        self.sub = self.nats.subscribe("chat.workflow.execute.*", queue_group="workflow-workers",
                                       callback=self._on_request)
        self.nats.flush()

    @staticmethod
    def reply_text(message):
        return "Seed worker here. You wrote: %s. That is all I have to say about it." % message

    def _on_request(self, msg):
        t = threading.Thread(target=self._handle, args=(msg,), daemon=True)
        self._threads.append(t)
        t.start()

    def _handle(self, msg):
        try:
            req = msg.json()
            self.requests.append((msg.subject, req))
            sid, mid = req["session_id"], req["message_id"]
            words = self.reply_text(req["message"]).split(" ")
            pieces = [w + " " for w in words[:-1]] + [words[-1]]
            redis = RedisClient(self.redis_port)
            routes = self.routes.setdefault(mid, [])
            try:
                chunks = [{"session_id": sid, "message_id": mid, "chunk_id": i, "chunk": p, "is_final": False}
                          for i, p in enumerate(pieces)]
                chunks.append({"session_id": sid, "message_id": mid, "chunk_id": len(pieces), "chunk": "",
                               "is_final": True, "metadata": {"tokens_used": len(words)}})
                for ch in chunks:
                    if self._stop.is_set():
                        return
                    members = redis.execute("SMEMBERS", "session:connections:%s" % sid)
                    pods = sorted({m.rsplit(":", 1)[0] for m in members if ":" in m})
                    if pods:
                        subjects = ["chat.pod.%s.response" % p for p in pods]
                    else:
                        subjects = ["chat.session.%s.broadcast" % sid]
                    for s in subjects:
                        self.nats.publish(s, json.dumps(ch))
                    routes.append(subjects)
                    time.sleep(self.CHUNK_DELAY)
            finally:
                redis.close()
        except Exception as e:  # noqa: BLE001
            self.errors.append(repr(e))
            sys.stderr.write("seed worker error: %r\n" % e)

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.nats.close()


class SeedWorkerInteropTest(ClusterTestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=0).start()
        cls.worker = SeedWorker(cls.cluster.nats.port, cls.cluster.redis.port)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.worker.close()
        finally:
            cls.cluster.cleanup()

    def setUp(self):
        super().setUp()
        self.assertEqual(self.cluster.nats.count_subscribers("chat.workflow.execute.*"), 1,
                         "only the seed worker may serve requests (no chat-worker)")

    def tearDown(self):
        super().tearDown()
        self.assertEqual(self.worker.errors, [], "seed worker errors")

    def check_reply(self, events, message_id, session_id, message, name=""):
        """Full reply in order, each chunk once, then one message_complete; returns the text."""
        evs = reply_events(events, message_id)
        self.assertEqual([e for e in evs if e.event == "error"], [], "%s: error events" % name)
        chunks = [e for e in evs if e.event == "chunk"]
        self.assertTrue(chunks, "%s: no chunks" % name)
        self.assertEqual(evs[-1].event, "message_complete", "%s: last event %r" % (name, evs[-1]))
        self.assertEqual(len([e for e in evs if e.event == "message_complete"]), 1, name)
        data = [e.json() for e in chunks]
        self.assertEqual([d["chunk_id"] for d in data], list(range(len(data))),
                         "%s: chunk ids not 0..n-1 in order" % name)
        for e, d in zip(chunks, data):
            for f in ("session_id", "message_id", "chunk_id", "chunk", "chunk_type", "is_final"):
                self.assertIn(f, d, "%s: chunk event lacks %r (docs/API.md#sse-events: always present): %r" % (name, f, e))
            self.assertEqual(d["session_id"], session_id)
            self.assertEqual(e.id, "%s:%d" % (message_id, d["chunk_id"]), "%s: SSE id" % name)
        self.assertEqual([d["is_final"] for d in data], [False] * (len(data) - 1) + [True], name)
        words = SeedWorker.reply_text(message).split(" ")
        self.assertEqual(data[-1].get("metadata", {}).get("tokens_used"), len(words), name)
        text = "".join(d["chunk"] for d in data)
        self.assertEqual(text, SeedWorker.reply_text(message), name)
        done = evs[-1].json()
        self.assertEqual(done.get("message_id"), message_id)
        self.assertEqual(done.get("token_count"), len(words), "%s: message_complete %r" % (name, done))
        self.assertEqual(done.get("finish_reason"), "stop", "%s: message_complete %r" % (name, done))
        return text

    def check_stored(self, pod, session_id, message_id, text):
        rows = pod.wait_message_row(message_id, "complete")
        row = rows[0]
        self.assertEqual(row["session_id"], session_id)
        self.assertEqual(row["role"], "assistant")
        self.assertEqual(row["content"], text)
        self.assertEqual(row["status"], "complete")
        all_rows = pod.db_query("SELECT message_id, role FROM messages WHERE session_id = ?", (session_id,))
        self.assertEqual(sorted(r["role"] for r in all_rows if r["message_id"] == message_id), ["assistant"])

    def test_reply_on_the_same_pod(self):
        a = self.cluster.pod("pod-a")
        sid, uid = new_id("s"), new_id("u")
        c, conn = self.open_sse(a, sid, uid)
        msg = "hello seed worker"
        acc = a.chat_ok(sid, uid, msg)
        mid = acc["message_id"]
        evs = c.collect_until(is_complete_for(mid), 20)
        text = self.check_reply(evs, mid, sid, msg)
        extra = [e for e in c.collect_for(0.5) if e.event in ("chunk", "message_complete", "error")]
        self.assertEqual(extra, [], "events after message_complete")
        self.check_stored(a, sid, mid, text)
        # what the pod asked for follows docs/API.md#nats
        subj, req = [(s, r) for s, r in self.worker.requests if r.get("message_id") == mid][0]
        self.assertEqual(subj, "chat.workflow.execute.%s" % sid)
        for f in ("message_id", "session_id", "user_id", "message", "context", "timestamp", "correlation_id"):
            self.assertIn(f, req, "WorkflowRequest lacks %r: %r" % (f, req))
        self.assertEqual((req["session_id"], req["user_id"], req["message"]), (sid, uid, msg))
        self.assertEqual(req["correlation_id"], acc["correlation_id"])
        self.assertTrue(all(s == ["chat.pod.pod-a.response"] for s in self.worker.routes[mid]),
                        "routes: %r" % self.worker.routes[mid][:3])

    def test_two_pods_two_devices(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        sid, uid = new_id("s"), new_id("u")
        ca, _ = self.open_sse(a, sid, uid)
        cb, _ = self.open_sse(b, sid, uid)
        msg = "two devices through the seed worker"
        acc = a.chat_ok(sid, uid, msg)
        mid = acc["message_id"]
        text = None
        for c, name in ((ca, "pod-a"), (cb, "pod-b")):
            text = self.check_reply(c.collect_until(is_complete_for(mid), 20), mid, sid, msg, name)
        self.check_stored(a, sid, mid, text)
        self.assertEqual(set(map(tuple, self.worker.routes[mid])),
                         {("chat.pod.pod-a.response", "chat.pod.pod-b.response")})

    def test_no_stream_broadcast_then_late_join(self):
        a = self.cluster.pod("pod-a")
        sid, uid = new_id("s"), new_id("u")
        msg = "nobody is watching yet"
        acc = a.chat_ok(sid, uid, msg)
        mid = acc["message_id"]
        wait_until(lambda: len(self.worker.routes.get(mid, [])) == len(SeedWorker.reply_text(msg).split(" ")) + 1,
                   10.0, msg="seed worker published the whole reply")
        self.assertTrue(all(s == ["chat.session.%s.broadcast" % sid] for s in self.worker.routes[mid]),
                        "with an empty registry set every chunk goes to broadcast: %r" % self.worker.routes[mid][:3])
        # the pod that accepted the message kept the broadcast chunks and stored the reply once
        text = SeedWorker.reply_text(msg)
        self.check_stored(a, sid, mid, text)
        # a stream opened now (same pod) gets the whole reply from the pod's own backlog
        c, _ = self.open_sse(a, sid, uid)
        self.check_reply(c.collect_until(is_complete_for(mid), 10), mid, sid, msg, "late join")
        self.check_stored(a, sid, mid, text)


if __name__ == "__main__":
    unittest.main()
