"""Distributed mode end to end: real nats-server, redis-server, several chatd pods, chat-workers.

Each class starts its own cluster (free ports, temp dirs) and tears it down; a failing test prints
every process log of its cluster.

Run (from tests/e2e): CHATD_BIN=../../build/chatd python3 -m unittest -v test_distributed
"""

import json
import random
import shutil
import signal
import subprocess
import threading
import time
import unittest
import uuid

from harness import ReplyCheck, is_complete_all, is_complete_for, new_id
from infra import EXECUTE_SUBJECT, Cluster, ClusterTestCase, NatsClient, demo_reply, wait_until

REGISTRY_PREFIXES = ("session:connections:", "pod:connections:", "heartbeat:")


def chunk_ids(events, message_id):
    out = []
    for e in events:
        if e.event == "chunk":
            d = e.json()
            if d.get("message_id") == message_id:
                out.append(d["chunk_id"])
    return out


class Wiretap:
    """Records every ResponseChunk on chat.pod.*.response and chat.session.*.broadcast."""

    def __init__(self, cluster, name="wiretap"):
        self.client = cluster.nats_client(name)
        self.pod_sub = self.client.subscribe("chat.pod.*.response")
        self.bcast_sub = self.client.subscribe("chat.session.*.broadcast")
        self.client.flush()

    def chunks(self, message_id, where="pod"):
        """[(subject, chunk_id, received_at)] of one message."""
        sub = self.pod_sub if where == "pod" else self.bcast_sub
        out = []
        for m in sub.snapshot():
            try:
                d = m.json()
            except ValueError:
                continue
            if d.get("message_id") == message_id:
                out.append((m.subject, d.get("chunk_id"), m.received_at))
        return out

    def wait_chunks(self, message_id, n, where="pod", subjects=None, timeout=15.0):
        """Waits until n chunks of the message were seen (on `subjects` only, if given); returns them."""
        def seen():
            got = [w for w in self.chunks(message_id, where) if subjects is None or w[0] in subjects]
            return got if len(got) >= n else None
        return wait_until(seen, timeout, msg="%d chunks of %s on the %s subject(s) %s" % (n, message_id, where,
                                                                                          subjects or ""))


# ---------------------------------------------------------------------------
# routing, fan-out, late join: two pods, two workers
# ---------------------------------------------------------------------------

class CrossPodTest(ClusterTestCase):
    JETSTREAM = True

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=2, jetstream=cls.JETSTREAM).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_sse_on_b_post_on_a(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        tap = Wiretap(self.cluster)
        sid, uid = new_id("s"), new_id("u")
        c, conn = self.open_sse(b, sid, uid)
        self.assertEqual(conn["pod_id"], "pod-b")
        # The registry write is asynchronous (`connected` does not wait for Redis): a POST that
        # wins that race is routed by broadcast, correctly but not what this test checks.
        r = self.cluster.redis.client()
        try:
            wait_until(lambda: r.smembers("session:connections:%s" % sid) == {"pod-b:%s" % conn["connection_id"]},
                       10, msg="pod-b's stream in the registry")
        finally:
            r.close()
        msg = "Route this reply from pod a to pod b please"
        acc = a.chat_ok(sid, uid, msg)
        evs = c.collect_until(is_complete_for(acc["message_id"]), 30)
        rc = ReplyCheck(self, evs, acc["message_id"], sid)
        self.assertEqual(rc.text, demo_reply(msg))
        # nothing more for this message afterwards
        extra = [e for e in c.collect_for(1.0) if e.event in ("chunk", "message_complete", "error")]
        self.assertEqual(extra, [], "events after message_complete")
        # on the wire: each chunk exactly once to pod-b's subject (one worker of the queue group
        # handled it, pod-b holds the stream), each once to pod-a's (it accepted the message
        # and stores the reply), none to the broadcast subject
        tap.wait_chunks(acc["message_id"], 2 * len(rc.chunks),
                        subjects=("chat.pod.pod-a.response", "chat.pod.pod-b.response"))
        tap.client.flush()
        wire = tap.chunks(acc["message_id"])
        for pod in ("pod-a", "pod-b"):
            got = sorted(cid for subj, cid, _ in wire if subj == "chat.pod.%s.response" % pod)
            self.assertEqual(got, list(range(len(rc.chunks))),
                             "chunks published to chat.pod.%s.response (each once expected): %r" % (pod, got))
        self.assertEqual([w for w in wire if w[0] not in ("chat.pod.pod-a.response", "chat.pod.pod-b.response")], [],
                         "chunks published to other pod subjects")
        self.assertEqual(tap.chunks(acc["message_id"], "broadcast"), [], "chunks on the broadcast subject")

    def test_two_devices_on_two_pods(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        sid, uid = new_id("s"), new_id("u")
        ca, _ = self.open_sse(a, sid, uid)
        cb, _ = self.open_sse(b, sid, uid)
        ca2, _ = self.open_sse(a, sid, uid)  # a second device on the same pod
        msgs = ["first question for both devices", "second question, posted on the other pod"]
        ids = []
        for i, m in enumerate(msgs):
            srv = a if i == 0 else b
            acc = srv.chat_ok(sid, uid, m)
            ids.append(acc["message_id"])
            for c, name in ((ca, "pod-a dev 1"), (cb, "pod-b"), (ca2, "pod-a dev 2")):
                evs = c.collect_until(is_complete_for(acc["message_id"]), 30)
                rc = ReplyCheck(self, evs, acc["message_id"], sid)
                self.assertTrue(rc.text.startswith(demo_reply(m, 0)[:60]), "%s: text %r" % (name, rc.text[:120]))
        for c, name in ((ca, "pod-a dev 1"), (cb, "pod-b"), (ca2, "pod-a dev 2")):
            extra = [e for e in c.collect_for(0.8) if e.event in ("chunk", "message_complete", "error")]
            self.assertEqual(extra, [], "%s: events after the last message_complete" % name)
            # over the whole stream: every message's chunks exactly once
            for mid in ids:
                got = chunk_ids(c.events, mid)
                self.assertEqual(got, list(range(len(got))), "%s: chunk ids of %s" % (name, mid))

    def test_second_device_joins_mid_reply_on_another_pod(self):
        """Device 1 watches on pod-a; device 2 opens on pod-b while the reply streams to pod-a."""
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        problems = []
        for delay in (0.1, 0.4):
            sid, uid = new_id("s"), new_id("u")
            msg = "second device joins after %.1fs" % delay
            c1, _ = self.open_sse(a, sid, uid)
            acc = a.chat_ok(sid, uid, msg)
            mid = acc["message_id"]
            time.sleep(delay)
            c2, _ = self.open_sse(b, sid, uid)
            for c, name in ((c1, "device 1 on pod-a"), (c2, "device 2 on pod-b (joined after %.1fs)" % delay)):
                try:
                    evs = c.collect_until(is_complete_for(mid), 10)
                except AssertionError as e:
                    problems.append("%s: no message_complete within 10 s; chunk ids %r (%s)"
                                    % (name, chunk_ids(c.events, mid), str(e)[:200]))
                    continue
                errs = [e.data for e in evs if e.event == "error"]
                ids = chunk_ids(evs, mid)
                if errs or ids != list(range(len(ids))):
                    problems.append("%s: chunk ids %r, errors %r" % (name, ids, errs))
                    continue
                rc = ReplyCheck(self, evs, mid, sid)
                if rc.text != demo_reply(msg):
                    problems.append("%s: text %r" % (name, rc.text))
            c1.close()
            c2.close()
        self.assertEqual(problems, [], "every device must get the whole reply, in order, each chunk once")

    def _late_join(self, post_pod, sse_pod, delay=0.2):
        sid, uid = new_id("s"), new_id("u")
        msg = "late joiner on another pod %s" % uuid.uuid4().hex[:6]
        acc = post_pod.chat_ok(sid, uid, msg)
        time.sleep(delay)
        c, conn = self.open_sse(sse_pod, sid, uid)
        self.assertEqual(conn["pod_id"], sse_pod.pod_id)
        evs = c.collect_until(is_complete_for(acc["message_id"]), 30)
        rc = ReplyCheck(self, evs, acc["message_id"], sid)
        self.assertEqual(rc.text, demo_reply(msg))
        extra = [e for e in c.collect_for(0.5) if e.event in ("chunk", "message_complete", "error")]
        self.assertEqual(extra, [], "events after message_complete")
        return rc

    def test_late_join_on_another_pod(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        self._late_join(a, b)
        self._late_join(b, a)


class CoreNatsCrossPodTest(CrossPodTest):
    """The same routing and fan-out on core NATS alone (NATS_JETSTREAM=false): requests on the
    workers' queue group, gaps and late joins served by the workers' replay."""
    JETSTREAM = False


class LateJoinFullSpeedTest(ClusterTestCase):
    """WORKER_DEMO_CHUNK_DELAY=0: the reply is finished (partly on broadcast) before the stream opens."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=1, worker_env={"WORKER_DEMO_CHUNK_DELAY": "0"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_late_join_after_reply_finished(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        tap = Wiretap(self.cluster)
        for i in range(5):
            post, sse = (a, b) if i % 2 == 0 else (b, a)
            sid, uid = new_id("s"), new_id("u")
            msg = "full speed late join %d" % i
            acc = post.chat_ok(sid, uid, msg)
            # the reply is finished before the stream opens: all of it went to the broadcast subject
            final = wait_until(lambda: [d for d in tap.bcast_sub.snapshot() if d.json().get("message_id") ==
                                        acc["message_id"] and d.json().get("is_final")], 15.0,
                               msg="round %d: the final chunk on the broadcast subject" % i)
            self.assertEqual(len(final), 1)
            c, _ = self.open_sse(sse, sid, uid)
            evs = c.collect_until(is_complete_for(acc["message_id"]), 15)
            rc = ReplyCheck(self, evs, acc["message_id"], sid)
            self.assertEqual(rc.text, demo_reply(msg), "round %d" % i)
            c.close()


# ---------------------------------------------------------------------------
# the Redis registry keys
# ---------------------------------------------------------------------------

class StreamsAcrossPodsTest(ClusterTestCase):
    """RATE_LIMIT_STREAMS_PER_USER holds for the pods together (places in Redis), open streams
    keep their places by renewal, and a pod that dies frees its streams' places by itself."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=0, pod_env={"RATE_LIMIT_STREAMS_PER_USER": "2",
                                                          "REDIS_RENEW_INTERVAL": "200ms"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def status_of_new_stream(self, pod, user):
        c = self.track(pod.sse(new_id("s"), user))
        return c.open().status, c

    def test_the_cap_holds_across_pods_and_a_dead_pod_frees_its_places(self):
        a, b = self.cluster[0], self.cluster[1]
        user = new_id("u")
        on_a, _ = self.open_sse(a, new_id("s"), user)
        on_b, _ = self.open_sse(b, new_id("s"), user)
        for pod in (a, b):
            status, refused = self.status_of_new_stream(pod, user)
            self.assertEqual(status, 429, "a third stream on %s" % pod.pod_id)
            self.assertEqual(refused.json_body()["error"]["code"], "rate_limited")
        self.assertEqual(self.status_of_new_stream(b, new_id("u"))[0], 200, "another user is not affected")
        time.sleep(1.5)  # more than twice the places' ttl (600 ms): only renewals keep them
        self.assertEqual(self.status_of_new_stream(a, user)[0], 429, "open streams lost their places")
        on_b.close()
        wait_until(lambda: self.status_of_new_stream(a, user)[0] == 200, 10,
                   msg="a stream closed on pod b frees a place on pod a")
        a.kill9()  # pod a held both of the user's places; nobody releases them
        for n in (1, 2):  # each expires one ttl after its own last renewal, not both at once
            wait_until(lambda: self.status_of_new_stream(b, user)[0] == 200, 10,
                       msg="place %d of the dead pod expires" % n)
        time.sleep(1.0)
        self.assertEqual(self.status_of_new_stream(b, user)[0], 429, "the live pod renews its own places")


class RegistryKeysTest(ClusterTestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=0).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_keys_while_connected_and_after_disconnect(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        r = self.cluster.redis_client()
        s1, s2, uid = new_id("s"), new_id("s"), new_id("u")
        streams = []
        for pod, sess in ((a, s1), (a, s1), (b, s1), (b, s2)):
            c, conn = self.open_sse(pod, sess, uid)
            self.assertEqual(conn["session_id"], sess)
            self.assertEqual(conn["pod_id"], pod.pod_id)
            streams.append((pod.pod_id, conn["connection_id"], sess, c))
        expected = set()
        for pod_id, conn_id, sess, _ in streams:
            expected |= {"session:connections:%s" % sess, "pod:connections:%s" % pod_id,
                         "heartbeat:%s:%s" % (pod_id, conn_id)}

        def registry_keys():
            return {k for k in r.keys("*") if k.startswith(REGISTRY_PREFIXES)}

        wait_until(lambda: registry_keys() == expected, 5.0,
                   msg="registry keys == %r" % sorted(expected))
        all_keys = set(r.keys("*"))
        self.assertEqual(all_keys, expected, "Redis holds keys beyond the registry keys of docs/API.md#registry")
        now = time.time()
        for sess in (s1, s2):
            key = "session:connections:%s" % sess
            self.assertEqual(r.type(key), "set", key)
            want = {"%s:%s" % (p, cid) for p, cid, s, _ in streams if s == sess}
            self.assertEqual(r.smembers(key), want, key)
            ttl = r.ttl(key)
            self.assertTrue(0 < ttl <= 300, "%s TTL %r not in (0,300]" % (key, ttl))
        for pod_id in ("pod-a", "pod-b"):
            key = "pod:connections:%s" % pod_id
            self.assertEqual(r.type(key), "hash", key)
            want = {cid: s for p, cid, s, _ in streams if p == pod_id}
            self.assertEqual(r.hgetall(key), want, key)
            ttl = r.ttl(key)
            self.assertTrue(0 < ttl <= 300, "%s TTL %r not in (0,300]" % (key, ttl))
        for pod_id, conn_id, _, _ in streams:
            key = "heartbeat:%s:%s" % (pod_id, conn_id)
            self.assertEqual(r.type(key), "string", key)
            val = r.get(key)
            self.assertRegex(val, r"^\d+$", "%s value %r is not a unix time" % (key, val))
            self.assertLess(abs(int(val) - now), 60, "%s value %r far from now (%d)" % (key, val, now))
            ttl = r.ttl(key)
            self.assertTrue(0 < ttl <= 30, "%s TTL %r not in (0,30]" % (key, ttl))

        # one stream leaves: its three entries go, the rest stays
        pod_id, conn_id, sess, c = streams[0]
        c.close()
        wait_until(lambda: r.execute("EXISTS", "heartbeat:%s:%s" % (pod_id, conn_id)) == 0, 5.0,
                   msg="heartbeat of the closed stream removed")
        self.assertNotIn("%s:%s" % (pod_id, conn_id), r.smembers("session:connections:%s" % sess))
        self.assertNotIn(conn_id, r.hgetall("pod:connections:%s" % pod_id))
        self.assertIn("%s:%s" % streams[1][0:2], r.smembers("session:connections:%s" % sess))

        for _, _, _, c in streams[1:]:
            c.close()
        wait_until(lambda: not registry_keys(), 5.0, msg="no registry keys after every stream closed")
        self.assertEqual(set(r.keys("*")), set(), "keys left in Redis after every stream closed")


class RegistryRenewalTest(ClusterTestCase):
    """docs/API.md#registry: while a connection lives, its heartbeat is renewed and the session set's and pod hash's
    300 s TTLs are extended, so none of them ever expires under it. pod-a renews every 500 ms
    (REDIS_RENEW_INTERVAL), pod-b at the contract's default of 10 s."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=0, workers=0).start()
        try:
            cls.cluster.add_pod("pod-a", env={"REDIS_RENEW_INTERVAL": "500ms"})
            cls.cluster.add_pod("pod-b")
        except BaseException:
            cls.cluster.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def keys_of(self, pod, conn, sid):
        return {"set": "session:connections:%s" % sid, "hash": "pod:connections:%s" % pod.pod_id,
                "heartbeat": "heartbeat:%s:%s" % (pod.pod_id, conn["connection_id"])}

    def check_renewal(self, pod, shortened_ms, limit_s):
        r = self.cluster.redis_client()
        sid, uid = new_id("s"), new_id("u")
        c, conn = self.open_sse(pod, sid, uid)
        keys = self.keys_of(pod, conn, sid)
        member = "%s:%s" % (pod.pod_id, conn["connection_id"])
        wait_until(lambda: member in r.smembers(keys["set"]) and r.get(keys["heartbeat"]), 10.0,
                   msg="%s registered" % member)
        first_beat = int(r.get(keys["heartbeat"]))
        # Someone shortens the TTLs (as if 300 s, 30 s had almost run out): only a renewal can save the keys.
        for k in keys.values():
            self.assertEqual(r.execute("PEXPIRE", k, shortened_ms), 1, k)
        t0 = time.monotonic()

        def renewed():
            ttl = {name: r.execute("PTTL", k) for name, k in keys.items()}
            return (ttl["set"] > 250000 and ttl["hash"] > 250000 and ttl["heartbeat"] > shortened_ms and
                    ttl["heartbeat"] <= 30000 and ttl)
        ttl = wait_until(renewed, limit_s, interval=0.1,
                         msg="%s: TTLs of %r renewed (set and hash to ~300 s, heartbeat to 30 s) before they ran out"
                             % (pod.pod_id, sorted(keys.values())))
        took = time.monotonic() - t0
        self.assertLessEqual(ttl["set"], 300000, ttl)
        self.assertLessEqual(ttl["hash"], 300000, ttl)
        self.assertEqual(r.smembers(keys["set"]), {member})
        self.assertEqual(r.hgetall(keys["hash"]), {conn["connection_id"]: sid})
        # the heartbeat's value is the time of the renewal
        wait_until(lambda: int(r.get(keys["heartbeat"])) > first_beat, limit_s, msg="heartbeat value renewed")
        c.close()
        wait_until(lambda: r.execute("EXISTS", keys["heartbeat"]) == 0, 10.0, msg="heartbeat removed on close")
        return took

    def test_fast_renewal(self):
        took = self.check_renewal(self.cluster.pod("pod-a"), 2000, 20.0)
        print("\nregistry renewal every 500 ms: TTLs restored %.1fs after they were cut to 2 s" % took)

    def test_default_renewal_every_10s(self):
        took = self.check_renewal(self.cluster.pod("pod-b"), 15000, 30.0)
        print("\nregistry renewal at the default interval: TTLs restored %.1fs after they were cut to 15 s" % took)


class GracefulShutdownTest(ClusterTestCase):
    """SIGTERM in distributed mode. Each test has its own cluster: it stops part of it."""

    POD_ENV = {"SERVER_SHUTDOWN_TIMEOUT": "60s"}
    # ~135 chunks at 50 ms: ~7 s of reply, long enough to signal in the middle of it
    WORKER_ENV = {"WORKER_DEMO_CHUNK_DELAY": "50ms", "SERVER_SHUTDOWN_TIMEOUT": "60s"}
    LONG = "a long reply to drain " + " ".join("d%d" % i for i in range(300))

    def test_pod_sigterm_hands_its_streams_off_and_leaves_the_registry(self):
        cl = self.new_cluster(pods=2, workers=1, pod_env=self.POD_ENV, worker_env=self.WORKER_ENV)
        a, b = cl.pod("pod-a"), cl.pod("pod-b")
        r = cl.redis_client()
        s1, s2, uid = new_id("s"), new_id("s"), new_id("u")
        ca, conn_a = self.open_sse(a, s1, uid)
        ca2, conn_a2 = self.open_sse(a, s2, uid)
        cb, conn_b = self.open_sse(b, s1, uid)
        member_b = "pod-b:%s" % conn_b["connection_id"]
        wait_until(lambda: r.smembers("session:connections:%s" % s1) == {"pod-a:%s" % conn_a["connection_id"], member_b}
                   and r.hgetall("pod:connections:pod-a") == {conn_a["connection_id"]: s1,
                                                               conn_a2["connection_id"]: s2},
                   10.0, msg="streams registered")
        tap = Wiretap(cl)
        acc = a.chat_ok(s1, uid, self.LONG)
        mid = acc["message_id"]
        ca.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 2, 15)
        t_term = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        # pod-a hands its streams off at once: a retry hint (within the spread window), then the end,
        # while the reply is still being generated
        self.assertTrue(ca.wait_closed(10.0), "pod-a's stream was not handed off")
        self.assertTrue(ca2.wait_closed(10.0), "pod-a's idle stream was not handed off")
        self.assertTrue(ca.retries, "no retry: hint before the hand-off")
        hint = ca.retries[-1][1]
        self.assertTrue(250 <= int(hint) <= 250 + 2000, "retry hint outside the spread window: %r" % hint)
        seen = chunk_ids(ca.events, mid)
        self.assertEqual(seen, list(range(len(seen))), "chunks before the hand-off")
        self.assertFalse([e for e in ca.events if e.event == "message_complete"], "the reply ended before the hand-off")
        # the client comes back through the load balancer, to pod-b, with its cursor: no gap, no duplicate
        c2 = self.track(b.sse(s1, uid, headers={"Last-Event-ID": "%s:%d" % (mid, seen[-1])}))
        c2.connected()
        evs = c2.collect_until(is_complete_for(mid), 60)
        got = chunk_ids(evs, mid)
        self.assertEqual(got, list(range(seen[-1] + 1, seen[-1] + 1 + len(got))),
                         "after the hand-off: chunks %d.. in order, each once; got %r" % (seen[-1] + 1, got))
        before = {e.json()["chunk_id"]: e.json()["chunk"] for e in ca.events if e.event == "chunk"}
        text = "".join(before[i] for i in seen) + "".join(e.json()["chunk"] for e in evs
                                                          if e.event == "chunk" and e.json()["message_id"] == mid)
        self.assertEqual(text, demo_reply(self.LONG), "the reply across the hand-off")
        # pod-a waited for the reply it accepted and stored it before it left
        try:
            code = a.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.fail("pod-a did not exit within 60 s of SIGTERM")
        self.assertEqual(code, 0, "pod-a exit code after SIGTERM")
        self.assertEqual(a.wait_message_row(mid, "complete")[0]["content"], text)
        after = [cid for _, cid, t in tap.chunks(mid) if t > t_term]
        self.assertGreater(len(after), 10, "too few chunks after SIGTERM to show the reply went on: %r" % after)
        # its registry entries are gone; pod-b's stay
        keys = r.keys("*")
        self.assertEqual([k for k in keys if k == "pod:connections:pod-a" or k.startswith("heartbeat:pod-a:")], [],
                         "registry keys of pod-a left after its graceful shutdown")
        for k in keys:
            if k.startswith("session:connections:"):
                self.assertEqual([m for m in r.smembers(k) if m.startswith("pod-a:")], [], k)
        self.assertEqual(r.execute("EXISTS", "session:connections:%s" % s2), 0)
        self.assertEqual(r.execute("EXISTS", "heartbeat:%s" % member_b), 1)
        ReplyCheck(self, cb.collect_until(is_complete_for(mid), 30), mid, s1)
        self.assertIn("streams_handed_off", a.log(400000))

    def test_worker_sigterm_drains_its_running_reply(self):
        cl = self.new_cluster(pods=1, workers=2, pod_env=self.POD_ENV, worker_env=self.WORKER_ENV)
        pod = cl.pod("pod-a")
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(pod, sid, uid)
        tap = Wiretap(cl)
        acc = pod.chat_ok(sid, uid, self.LONG)
        mid = acc["message_id"]
        c.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 2, 15)
        running = [w for w in cl.workers if "generation_started message_id=%s" % mid in w.log(400000)]
        self.assertEqual(len(running), 1, "exactly one worker runs %s" % mid)
        w = running[0]
        other = [x for x in cl.workers if x is not w][0]
        w.proc.send_signal(signal.SIGTERM)
        # it stops taking work at once, but stays until its reply is done
        wait_until(lambda: "work_intake_stopped" in w.log(400000), 15.0,
                   msg="the signalled worker stopped pulling from the work queue")
        t_left = time.monotonic()
        self.assertIn("shutdown_started", w.log(400000))
        # new work goes to the other worker meanwhile
        msg2 = "posted while a worker drains"
        acc2 = pod.chat_ok(sid, uid, msg2)
        evs = c.collect_until(is_complete_all([mid, acc2["message_id"]]), 60)
        self.assertIn("generation_started message_id=%s" % acc2["message_id"], other.log(400000))
        self.assertNotIn("generation_started message_id=%s" % acc2["message_id"], w.log(400000))
        rc = ReplyCheck(self, c.events, mid, sid)
        self.assertEqual(rc.text, demo_reply(self.LONG), "the drained reply must be whole")
        after = [cid for _, cid, t in tap.chunks(mid) if t > t_left]
        self.assertGreater(len(after), 10, "too few chunks published after the worker left its queue group to show "
                           "a drain (make the reply longer): %r" % after)
        ReplyCheck(self, evs, acc2["message_id"], sid)
        self.assertEqual(pod.wait_message_row(mid, "complete")[0]["content"], rc.text)
        try:
            code = w.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.fail("the worker did not exit after its reply was done")
        self.assertEqual(code, 0, "worker exit code after SIGTERM")
        log = w.log(400000)
        self.assertIn("worker_stopped", log)
        self.assertNotIn("shutdown_timeout", log, "the drain ran into SERVER_SHUTDOWN_TIMEOUT")


# ---------------------------------------------------------------------------
# crafted chunks, no worker: reordering, de-duplication, gap replay, broadcast holders
# ---------------------------------------------------------------------------

class CraftedChunksTest(ClusterTestCase):
    """No chat-worker: this test takes the WorkflowRequest itself and publishes crafted ResponseChunks."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=0).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    @staticmethod
    def make_chunks(sid, mid, words, tokens=42):
        n = len(words)
        chunks = []
        for i in range(n):
            ch = {"session_id": sid, "message_id": mid, "chunk_id": i, "chunk": words[i],
                  "chunk_type": "content", "is_final": i == n - 1,
                  "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "correlation_id": "corr_e2e"}
            if i == n - 1:
                ch["metadata"] = {"model": "e2e-model", "tokens_used": tokens, "finish_reason": "stop"}
            chunks.append(ch)
        return chunks

    def test_shuffled_duplicated_two_publishers(self):
        pod = self.cluster.pod("pod-a")
        fake_worker = self.cluster.nats_client("fake-worker")
        reqs = fake_worker.subscribe("chat.workflow.execute.*", queue_group="workflow-workers")
        fake_worker.flush()
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(pod, sid, uid)
        rng = random.Random(1234)
        subj = "chat.pod.%s.response" % pod.pod_id
        for round_ in range(3):
            acc = pod.chat_ok(sid, uid, "question %d" % round_)
            req = reqs.next(5.0).json()
            mid = req["message_id"]
            self.assertEqual(mid, acc["message_id"])
            n = 25
            words = ["w%d_%d " % (round_, i) for i in range(n)]
            chunks = self.make_chunks(sid, mid, words)
            p1 = self.track(NatsClient(self.cluster.nats.port, name="pub1"))
            p2 = self.track(NatsClient(self.cluster.nats.port, name="pub2"))
            order1 = list(range(1, n))
            rng.shuffle(order1)
            order1.append(0)              # chunk 0 last: everything must wait for it
            order2 = list(range(n)) + rng.sample(range(n), 10)
            rng.shuffle(order2)
            for i1, i2 in zip(order1 + [None] * (len(order2) - len(order1)), order2):
                if i1 is not None:
                    p1.publish(subj, chunks[i1])
                p2.publish(subj, chunks[i2])
            p1.flush()
            p2.flush()
            evs = c.collect_until(is_complete_for(mid), 15)
            rc = ReplyCheck(self, evs, mid, sid)
            self.assertEqual(rc.text, "".join(words))
            self.assertEqual(rc.complete.get("token_count"), 42)
            # more duplicates after the end change nothing
            for i in rng.sample(range(n), 5):
                p1.publish(subj, chunks[i])
            p1.flush()
            extra = [e for e in c.collect_for(0.7) if e.event in ("chunk", "message_complete", "error")]
            self.assertEqual(extra, [], "events for duplicates after message_complete")
            p1.close()
            p2.close()
            # stored once, complete, with the reassembled text
            rows = pod.wait_message_row(mid, "complete")
            self.assertEqual((rows[0]["role"], rows[0]["content"], rows[0]["status"]),
                             ("assistant", "".join(words), "complete"))
        self.assertEqual(len(pod.db_query("SELECT 1 FROM messages WHERE session_id = ? AND role = 'assistant'",
                                          (sid,))), 3)

    def test_a_chunk_naming_another_session_cannot_join_its_reply(self):
        pod = self.cluster.pod("pod-a")
        fake_worker = self.cluster.nats_client("fake-worker-2")
        try:
            reqs = fake_worker.subscribe("chat.workflow.execute.*", queue_group="workflow-workers")
            fake_worker.flush()
            sid, alice = new_id("s"), new_id("alice")
            victim, _ = self.open_sse(pod, sid, alice)
            # Several other sessions: their shards are this one's and others (the pod shards by session).
            others = [new_id("s") for _ in range(6)]
            thieves = [self.open_sse(pod, other, new_id("mallory"))[0] for other in others]
            mid = pod.chat_ok(sid, alice, "a private question")["message_id"]
            self.assertEqual(reqs.next(5.0).json()["message_id"], mid)
        finally:
            fake_worker.close()  # the class's other tests take the requests themselves
        words = ["real%d " % i for i in range(6)]
        chunks = self.make_chunks(sid, mid, words)
        pub = self.track(NatsClient(self.cluster.nats.port, name="forger"))
        # Ahead of the real chunks, a whole reply of the same id for each other session: chunk 0 on the pod's
        # subject, the final chunk 1 on that session's broadcast subject (whose check it passes).
        for other in others:
            forged = self.make_chunks(other, mid, ["FORGED ", "END"])
            pub.publish("chat.pod.%s.response" % pod.pod_id, forged[0])
            pub.publish("chat.session.%s.broadcast" % other, forged[1])
        for ch in chunks:
            pub.publish("chat.pod.%s.response" % pod.pod_id, ch)
        pub.flush()
        rc = ReplyCheck(self, victim.collect_until(is_complete_for(mid), 15), mid, sid)
        self.assertEqual(rc.text, "".join(words))
        rows = pod.wait_message_row(mid, "complete")
        self.assertEqual((rows[0]["session_id"], rows[0]["content"]), (sid, "".join(words)))
        # The forging sessions' streams never get the reply's text. (What they forged may come back to
        # them once the reply has ended: the pod forgets a reply it accepted when it is stored.)
        for thief in thieves:
            thief.collect_for(0.2)  # reads what came meanwhile; `events` holds all
            leaked = [e for e in thief.events if e.event == "chunk" and "real" in e.json().get("chunk", "")]
            self.assertEqual(leaked, [], "another session's stream got this reply's text")
        dropped = [line for line in pod.get("/metrics").body.decode().splitlines()
                   if line.startswith('chat_chunks_dropped_total{reason="wrong_session"}')]
        self.assertEqual(len(dropped), 1, dropped)
        self.assertGreaterEqual(float(dropped[0].split()[-1]), 1, dropped)
        self.assertIn("chunk_rejected", pod.log())

    def test_gap_asks_for_replay_and_broadcast_kept_by_holders_only(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        n = self.cluster.nats_client("replay-watch")
        replays = n.subscribe("chat.session.*.replay")
        n.flush()
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(a, sid, uid)
        # the first stream of a session on a pod asks the workers for a replay
        # Only this session's asks: the class's other tests leave replies of their own sessions behind.
        def next_replay(timeout):
            deadline = time.monotonic() + timeout
            while True:
                m = replays.next(max(0.01, deadline - time.monotonic()))
                if m.subject == "chat.session.%s.replay" % sid:
                    return m
        first = next_replay(5.0)
        self.assertEqual(first.subject, "chat.session.%s.replay" % sid)
        self.assertEqual(first.json(), {"session_id": sid, "pod_id": "pod-a"})
        mid = "msg_" + uuid.uuid4().hex[:24]
        chunks = self.make_chunks(sid, mid, ["a ", "b ", "c ", "d"], tokens=4)
        bsubj = "chat.session.%s.broadcast" % sid
        t0 = time.monotonic()
        for i in (0, 2, 3):
            n.publish(bsubj, chunks[i])
        n.flush()
        evs = c.collect_for(0.4)
        self.assertEqual(chunk_ids(evs, mid), [0], "only chunk 0 can stream while 1 is missing")
        # pod-a buffers the broadcast chunks (it holds the session); pod-b holds nothing of it
        self.assertGreaterEqual(a.health()["active_buffers"], 1, a.health())
        self.assertEqual(b.health()["active_buffers"], 0, "pod-b kept broadcast chunks of a session it "
                                                           "does not hold: %r" % b.health())
        # a gap older than 1 s: pod-a asks for a replay
        try:
            m = next_replay(4.0)
        except Exception:  # noqa: BLE001
            self.fail("no chat.session.%s.replay request within 4 s of a gap in the chunks" % sid)
        waited = m.received_at - t0
        # a gap names its reply: the worker resends it even if it has finished
        self.assertEqual(m.json(), {"session_id": sid, "pod_id": "pod-a", "message_id": mid})
        self.assertGreaterEqual(waited, 0.9, "replay asked before the gap was 1 s old")
        n.publish(bsubj, chunks[1])
        n.flush()
        evs += c.collect_until(is_complete_for(mid), 5)
        rc = ReplyCheck(self, evs, mid, sid)
        self.assertEqual(rc.text, "a b c d")
        self.assertEqual(b.health()["active_buffers"], 0)
        self.assertEqual(b.db_query("SELECT 1 FROM messages WHERE message_id = ?", (mid,)), [])


class MissingChunkTest(ClusterTestCase):
    """docs/API.md#buffering: a chunk that never comes is skipped after BUFFER_MISSING_CHUNK_TIMEOUT (2 s here): the
    stream gets `error` (code chunks_missing, the ids), then what follows; the reply is stored as incomplete."""

    TIMEOUT_S = 2.0

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=1, workers=0, pod_env={"BUFFER_MISSING_CHUNK_TIMEOUT": "2s"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_missing_chunk_is_skipped_after_the_timeout(self):
        pod = self.cluster.pod("pod-a")
        fake_worker = self.cluster.nats_client("fake-worker")
        reqs = fake_worker.subscribe("chat.workflow.execute.*", queue_group="workflow-workers")
        fake_worker.flush()
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(pod, sid, uid)
        acc = pod.chat_ok(sid, uid, "a reply that loses a chunk on the way")
        mid = reqs.next(10.0).json()["message_id"]
        self.assertEqual(mid, acc["message_id"])
        words = ["zero ", "one ", "two ", "three ", "four ", "five"]
        chunks = CraftedChunksTest.make_chunks(sid, mid, words, tokens=6)
        subj = "chat.pod.%s.response" % pod.pod_id
        t0 = time.monotonic()
        for i in (0, 1, 3, 4, 5):  # chunk 2 never comes
            fake_worker.publish(subj, chunks[i])
        fake_worker.flush()
        evs = c.collect_until(lambda e: e.event == "message_complete" and e.json().get("message_id") == mid,
                              self.TIMEOUT_S + 30)
        mine = [e for e in evs if e.event in ("chunk", "error", "message_complete")]
        shape = [(e.event, e.json().get("chunk_id")) if e.event == "chunk" else (e.event, None) for e in mine]
        self.assertEqual(shape, [("chunk", 0), ("chunk", 1), ("error", None), ("chunk", 3), ("chunk", 4),
                                 ("chunk", 5), ("message_complete", None)],
                         "chunks 0-1 stream at once; after the timeout an error names chunk 2, then 3-5 follow")
        err = [e for e in mine if e.event == "error"][0]
        d = err.json()
        self.assertEqual((d.get("message_id"), d.get("code"), d.get("chunk_ids")), (mid, "chunks_missing", [2]), d)
        self.assertIsInstance(d.get("message"), str, d)
        waited = err.received_at - t0
        self.assertGreaterEqual(waited, self.TIMEOUT_S - 0.3,
                                "chunk 2 was given up after %.2fs, before BUFFER_MISSING_CHUNK_TIMEOUT" % waited)
        early = [e for e in mine if e.event == "chunk" and e.json()["chunk_id"] < 2]
        self.assertTrue(all(e.received_at - t0 < self.TIMEOUT_S - 0.3 for e in early),
                        "chunks before the gap were held back")
        for e in mine:
            if e.event == "chunk":
                self.assertEqual(e.id, "%s:%d" % (mid, e.json()["chunk_id"]))
        done = mine[-1].json()
        self.assertEqual(done.get("message_id"), mid)
        # stored once the reply ended: incomplete, with what did arrive, and which ids were missing
        rows = pod.wait_message_row(mid, "incomplete")
        row = rows[0]
        self.assertEqual((row["role"], row["content"]), ("assistant", "zero one three four five"), row)
        md = json.loads(row["metadata"])
        self.assertEqual(md.get("missing_chunks"), [2], md)
        self.assertEqual(md.get("error_code"), "chunks_missing", md)
        # the late chunk 2 changes nothing any more
        fake_worker.publish(subj, chunks[2])
        fake_worker.flush()
        late = [e for e in c.collect_for(1.0) if e.event in ("chunk", "error", "message_complete")]
        self.assertEqual(late, [], "events for a chunk that came after it was given up")
        self.assertEqual(pod.wait_message_row(mid, "incomplete")[0]["content"], "zero one three four five")


class QueuedCancelTest(ClusterTestCase):
    """docs/API.md#cancel: a chat whose request no worker holds yet (every worker busy, or none up: it waits in the
    JetStream work queue) is cancelled by the pod that accepted it, at once, whichever pod the cancel comes through:
    that pod's streams see it end cancelled, it is stored so, empty, and its request leaves the work queue (found
    among the session's queued requests), so a worker that comes up later never runs it."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=0, jetstream=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    @staticmethod
    def cancel(pod, message_id, user_id):
        return pod.request("POST", "/api/chat/%s/cancel?user_id=%s" % (message_id, user_id), body=b"")

    def test_cancel_through_another_pod_while_no_worker_is_up(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        sid, uid = new_id("s"), new_id("u")
        ca, _ = self.open_sse(a, sid, uid)
        cb, _ = self.open_sse(b, sid, uid)
        # The cancelled chat waits between two others of the session: the withdraw finds it among them.
        ahead = a.chat_ok(sid, uid, "a chat queued ahead of it")["message_id"]
        mid = a.chat_ok(sid, uid, "a chat that waits in the work queue")["message_id"]
        later = a.chat_ok(sid, uid, "and one behind it")["message_id"]

        r = self.cancel(b, mid, new_id("u"))
        self.assertEqual(r.status, 404, "another user's cancel: %s %r" % (r.status, r.body))
        r = self.cancel(b, mid, uid)
        self.assertEqual(r.status, 202, "the owner's cancel through pod-b: %s %r" % (r.status, r.body))
        self.assertEqual(r.json(), {"message_id": mid, "status": "cancelling"})

        def ended(ev):
            return ev.event == "message_complete" and ev.json().get("message_id") == mid
        evs = [e for e in ca.collect_until(ended, 15) if e.event in ("chunk", "error", "message_complete")
               and e.json().get("message_id") == mid]
        self.assertEqual([e.event for e in evs], ["error", "message_complete"], evs)
        self.assertEqual(evs[0].json().get("code"), "cancelled")
        self.assertEqual(evs[1].json().get("finish_reason"), "cancelled")
        row = a.wait_message_row(mid, "cancelled")[0]
        self.assertEqual((row["role"], row["content"]), ("assistant", ""), row)
        log = a.log(400000)
        self.assertIn("reply_cancelled_before_start message_id=%s" % mid, log)
        wait_until(lambda: "request_withdrawn message_id=%s" % mid in a.log(400000), 10, msg="the request withdrawn")

        r = self.cancel(a, mid, uid)
        self.assertEqual((r.status, r.json().get("status")), (202, "cancelling"), "sent again: the first answer")

        # A worker comes up: the queue no longer holds the request, so it never runs, and no stream shows anything
        # more of it. The chats queued around it, and the next one, are served as usual.
        worker = self.cluster.add_worker()
        around = ca.collect_until(is_complete_all([ahead, later]), 30)
        ReplyCheck(self, around, ahead, sid)
        ReplyCheck(self, around, later, sid)
        nxt = a.chat_ok(sid, uid, "and now a chat that a worker takes")["message_id"]
        ReplyCheck(self, ca.collect_until(is_complete_for(nxt), 30), nxt, sid)
        self.assertNotIn("message_id=%s" % mid, worker.log(400000), "the worker saw the withdrawn request")
        ReplyCheck(self, cb.collect_until(is_complete_for(nxt), 30), nxt, sid)

        def seen(c):
            return [e.event for e in c.events if e.event in ("chunk", "error", "message_complete")
                    and e.json().get("message_id") == mid]
        self.assertEqual(seen(ca), ["error", "message_complete"], "pod-a: the end, and nothing after it")
        self.assertEqual(seen(cb), [], "pod-b: no chunk of it ever came")
        self.assertEqual(a.wait_message_row(mid, "cancelled")[0]["content"], "")


class StalledNatsPublishTest(ClusterTestCase):
    """docs/API.md#post-chat: a JetStream publish whose answer does not come in time (5 s) may be stored all the
    same (a server that stalled, a stream electing its leader); refused then, the request would still run later, a
    reply stored for a chat its client was told failed. The pod publishes it once more under the same Nats-Msg-Id:
    the stream keeps one copy, and the chat is accepted."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=1, workers=0, jetstream=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_a_publish_that_timed_out_is_published_again_and_runs_once(self):
        pod = self.cluster.pod("pod-a")
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(pod, sid, uid)
        text = "posted while nats-server stalls"
        nats = self.cluster.nats.proc
        answer = {}
        nats.send_signal(signal.SIGSTOP)  # the publish is in its socket; no answer comes
        try:
            post = threading.Thread(target=lambda: answer.update(
                r=pod.post_json("/api/chat", {"session_id": sid, "user_id": uid, "message": text}, timeout=60)))
            post.start()
            wait_until(lambda: "request_publish_retried" in pod.log(400000), 20,
                       msg="the pod publishing the request again after 5 s without an answer")
        finally:
            nats.send_signal(signal.SIGCONT)
        post.join(30)
        r = answer["r"]
        self.assertEqual(r.status, 202, "the chat refused after its request was stored: %s %r" % (r.status, r.body))
        mid = r.json()["message_id"]
        # Two publishes, one request in the work queue (the stream's duplicate window).
        self.assertEqual(self.cluster.nats.stream_messages("CHAT_WORK"), 1)

        worker = self.cluster.add_worker()
        ReplyCheck(self, c.collect_until(is_complete_for(mid), 30), mid, sid)
        self.assertEqual(pod.wait_message_row(mid, "complete")[0]["content"], demo_reply(text))
        users = pod.db_query("SELECT content FROM messages WHERE session_id = ? AND role = 'user'", (sid,))
        self.assertEqual([u["content"] for u in users], [text], "the user's message, once")
        after = pod.chat_ok(sid, uid, "and the next one")["message_id"]
        ReplyCheck(self, c.collect_until(is_complete_for(after), 30), after, sid)
        # The worker never got a second copy (it would take one over, or drop it as finished).
        log = worker.log(400000)
        self.assertEqual(log.count("generation_started message_id=%s" % mid), 1, "the request ran twice")
        for second_copy in ("redelivery_taken_over message_id=%s" % mid, "reply_already_finished message_id=%s" % mid):
            self.assertNotIn(second_copy, log)


class JetStreamStateLostTest(ClusterTestCase):
    """docs/API.md#chunk-log: NATS restarted without its JetStream storage (no volume, a wiped node): the streams and
    the workers' consumer are gone. Pods and workers find that out and make them again, so chats work once more
    without restarting either."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=1, workers=1, jetstream=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_streams_and_consumer_lost_with_the_server_are_made_again(self):
        pod = self.cluster.pod("pod-a")
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(pod, sid, uid)
        first = pod.chat_ok(sid, uid, "before the server lost its storage")["message_id"]
        ReplyCheck(self, c.collect_until(is_complete_for(first), 30), first, sid)
        nats = self.cluster.nats
        nats.stop()
        shutil.rmtree(nats.store_dir, ignore_errors=True)
        nats.start()
        deadline = time.monotonic() + 45
        accepted = None
        while accepted is None and time.monotonic() < deadline:
            r = pod.post_json("/api/chat", {"session_id": sid, "user_id": uid, "message": "after"}, timeout=30)
            if r.status == 202:
                accepted = r.json()["message_id"]
            else:
                time.sleep(1)
        self.assertIsNotNone(accepted, "no chat accepted within 45 s of the server coming back without its streams")
        ReplyCheck(self, c.collect_until(is_complete_for(accepted), 30), accepted, sid)
        self.assertEqual({d["name"] for d in nats.stream_details()}, {"CHAT_WORK", "CHAT_LOG"})


# ---------------------------------------------------------------------------
# kill -9 of a pod while a reply streams
# ---------------------------------------------------------------------------

class PodKillTest(ClusterTestCase):
    DELAY = 0.25

    @classmethod
    def setUpClass(cls):
        # Heartbeats renewed every 500 ms: whenever the pod is killed, its heartbeat has ~30 s left. (With the
        # 10 s default the test used to wait for the 0.7 s window just before a renewal, within 12 s: when the
        # stream opened less than ~7 s into the pod's renewal cycle there was no such window in time.)
        cls.cluster = Cluster(pods=2, workers=1, pod_env={"REDIS_RENEW_INTERVAL": "500ms"},
                              worker_env={"WORKER_DEMO_CHUNK_DELAY": "250ms", "WORKER_DEMO_WORDS_PER_CHUNK": "1"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_kill9_pod_reconnect_elsewhere(self):
        a, b = self.cluster.pod("pod-a"), self.cluster.pod("pod-b")
        r = self.cluster.redis_client()
        tap = Wiretap(self.cluster)
        sid, uid = new_id("s"), new_id("u")
        # ~165 one-word chunks at 250 ms: the reply runs ~41 s, longer than kill + heartbeat expiry (~31 s)
        msg = " ".join("long%d" % i for i in range(95))
        expected = demo_reply(msg)
        c1, conn = self.open_sse(a, sid, uid)
        hb = "heartbeat:pod-a:%s" % conn["connection_id"]
        acc = b.chat_ok(sid, uid, msg)
        mid = acc["message_id"]
        t_post = time.monotonic()
        first = c1.collect_until(lambda e: e.event == "chunk", 10)
        self.assertEqual(first[-1].json()["chunk_id"], 0)
        # the heartbeat is fresh (renewed every 500 ms): it expires ~30 s after the kill
        wait_until(lambda: r.execute("PTTL", hb) > 25000, 10.0,
                         msg="heartbeat %s renewed" % hb)
        a.kill9()
        t_kill = time.monotonic()
        self.assertTrue(c1.wait_closed(5.0), "stream of the killed pod did not end")
        seen = chunk_ids(c1.events, mid)
        self.assertEqual(seen, list(range(len(seen))), "chunks before the kill")
        self.assertTrue(seen, "no chunk before the kill")
        last = seen[-1]
        time.sleep(0.5)
        # the client reconnects to pod-b with its cursor
        c2 = self.track(b.sse(sid, uid, headers={"Last-Event-ID": "%s:%d" % (mid, last)}))
        c2.connected()
        # the dead pod's heartbeat expires (no renewal any more)
        wait_until(lambda: r.execute("EXISTS", hb) == 0, 40.0, interval=0.1,
                   msg="heartbeat of the killed pod expires")
        t_exp = time.monotonic()
        # its TTL is 30 s; the slack is for polling on a busy machine
        self.assertLess(t_exp - t_kill, 32.0, "heartbeat outlived the pod by more than 30 s")
        evs = c2.collect_until(is_complete_for(mid), 60)
        t_done = time.monotonic()
        got = chunk_ids(evs, mid)
        self.assertEqual(got, list(range(last + 1, last + 1 + len(got))),
                         "chunks after reconnect must be %d.. in order, each once; got %r" % (last + 1, got))
        chunk_evs = [e for e in evs if e.event == "chunk" and e.json()["message_id"] == mid]
        self.assertTrue(chunk_evs[-1].json()["is_final"], "last chunk not final")
        texts_before = {e.json()["chunk_id"]: e.json()["chunk"] for e in c1.events if e.event == "chunk"}
        text = "".join(texts_before[i] for i in seen) + "".join(e.json()["chunk"] for e in chunk_evs)
        self.assertEqual(text, expected, "reply text across the two pods")
        self.assertEqual([e.event for e in evs if e.event in ("message_complete", "error")], ["message_complete"])
        # routing: after the heartbeat expired (+1 s worker cache, +0.5 s slack) nothing more went to
        # pod-a; pod-b kept getting the chunks
        wire = tap.chunks(mid)
        late_a = [(s, cid) for s, cid, t in wire if s == "chat.pod.pod-a.response" and t > t_exp + 1.5]
        late_b = [(s, cid) for s, cid, t in wire if s == "chat.pod.pod-b.response" and t > t_exp + 1.5]
        both = [cid for s, cid, t in wire if s == "chat.pod.pod-a.response" and t_kill + 0.5 < t < t_exp]
        print("\nkill -9: kill %.1fs after POST, heartbeat gone %.1fs after kill, reply done %.1fs after expiry; "
              "chunks to pod-a/pod-b after expiry+1.5s: %d/%d; to the dead pod meanwhile: %d; resumed from %d"
              % (t_kill - t_post, t_exp - t_kill, t_done - t_exp, len(late_a), len(late_b), len(both), last + 1))
        self.assertEqual(late_a, [], "worker still published to the dead pod %.1fs after its heartbeat expired"
                         % (t_done - t_exp))
        self.assertGreater(len(late_b), 3, "worker did not publish to pod-b after pod-a's heartbeat expired "
                           "(reply ended %.1fs after expiry; kill at %.1fs after POST)"
                           % (t_done - t_exp, t_kill - t_post))
        self.assertEqual(tap.chunks(mid, "broadcast"), [], "chunks went to broadcast although pod-b was live")
        # the killed pod comes back on its port and serves again
        a.restart()
        self.cluster.wait_pod_ready(a)
        s2 = new_id("s")
        c3, _ = self.open_sse(a, s2, uid)
        acc3 = b.chat_ok(s2, uid, "short")
        # (the slow demo pace makes a whole reply take ~20 s: the first chunks are enough here)
        evs = c3.collect_until(lambda e: len(chunk_ids(c3.events, acc3["message_id"])) >= 4, 10)
        self.assertEqual(chunk_ids(evs, acc3["message_id"]), [0, 1, 2, 3], "restarted pod-a streams the reply")


# ---------------------------------------------------------------------------
# NATS outage
# ---------------------------------------------------------------------------

class NatsRestartTest(ClusterTestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=1, pod_env={"SSE_HEARTBEAT_INTERVAL": "1s"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_nats_restart(self):
        cl = self.cluster
        a, b = cl.pod("pod-a"), cl.pod("pod-b")
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(a, sid, uid)
        acc = b.chat_ok(sid, uid, "before the outage")
        ReplyCheck(self, c.collect_until(is_complete_for(acc["message_id"]), 30), acc["message_id"], sid)
        for p in (a, b):
            h = p.health()
            self.assertIs(h["nats_connected"], True, h)

        cl.nats.stop()
        for p in (a, b):
            wait_until(lambda: p.health()["nats_connected"] is False, 15.0,
                       msg="%s /health nats_connected:false after nats-server stopped" % p.pod_id)
            h = p.health()
            self.assertEqual(h["status"], "degraded", "status while NATS is down: %r" % h)
            self.assertEqual(p.get("/ready").status, 503, "%s /ready while NATS is down" % p.pod_id)
        outage_text = "posted during the outage %s" % uuid.uuid4().hex[:6]
        for p in (a, b):
            r = p.chat(sid, uid, outage_text)
            self.assertEqual(r.status, 503, "POST /api/chat while NATS is down: %r" % r)
            ra = r.header("retry-after")
            self.assertIsNotNone(ra, "503 without Retry-After: %r" % r)
            self.assertRegex(ra, r"^\d+$", "Retry-After %r" % ra)
            self.assertGreaterEqual(int(ra), 1)
            self.assertIsInstance(r.json().get("error"), dict, r)
        # the open stream stays up (pings keep coming)
        evs = c.collect_for(2.5)
        self.assertFalse(c.closed, "SSE stream closed during the NATS outage")
        self.assertTrue([e for e in evs if e.event == "ping"], "no ping during the outage: %r" % evs)

        cl.nats.start()  # same port
        for p in (a, b):
            wait_until(lambda: p.health()["nats_connected"] is True, 25.0,
                       msg="%s /health nats_connected:true after nats-server returned" % p.pod_id)
            wait_until(p.ready, 10.0, msg="%s /ready 200 after NATS returned" % p.pod_id)
        cl.wait_ready(25.0)  # pods' and worker's subscriptions are back on the new server

        # the old stream still works: a new chat posted on the other pod arrives on it
        acc = b.chat_ok(sid, uid, "after the outage")
        evs = c.collect_until(is_complete_for(acc["message_id"]), 30)
        ReplyCheck(self, evs, acc["message_id"], sid)
        # and a fresh session across pods
        s2 = new_id("s")
        c2, _ = self.open_sse(b, s2, uid)
        msg = "fresh session after restart"
        acc2 = a.chat_ok(s2, uid, msg)
        rc = ReplyCheck(self, c2.collect_until(is_complete_for(acc2["message_id"]), 30), acc2["message_id"], s2)
        self.assertEqual(rc.text, demo_reply(msg))
        # nothing half-done: the refused message is in neither pod's database
        for p in (a, b):
            rows = p.db_query("SELECT message_id FROM messages WHERE content = ?", (outage_text,))
            self.assertEqual(rows, [], "%s stored the message that got 503" % p.pod_id)


# ---------------------------------------------------------------------------
# Redis outage
# ---------------------------------------------------------------------------

class RedisOutageTest(ClusterTestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(pods=2, workers=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_redis_stop_and_return(self):
        cl = self.cluster
        a, b = cl.pod("pod-a"), cl.pod("pod-b")
        tap = Wiretap(cl)
        sid, uid = new_id("s"), new_id("u")
        cb, conn_b = self.open_sse(b, sid, uid)
        r = cl.redis_client()
        member_b = "pod-b:%s" % conn_b["connection_id"]
        wait_until(lambda: member_b in r.smembers("session:connections:%s" % sid), 5.0, msg="registered")
        r.close()

        cl.redis.stop()
        for p in (a, b):
            wait_until(lambda: p.health()["redis_connected"] is False, 15.0,
                       msg="%s /health redis_connected:false after redis-server stopped" % p.pod_id)
            self.assertEqual(p.health()["status"], "degraded")
        # a stream opened during the outage
        ca, conn_a = self.open_sse(a, sid, uid)
        member_a = "pod-a:%s" % conn_a["connection_id"]
        msg = "reply while redis is down"
        acc = a.chat_ok(sid, uid, msg)
        for c, name in ((cb, "pod-b"), (ca, "pod-a")):
            rc = ReplyCheck(self, c.collect_until(is_complete_for(acc["message_id"]), 30), acc["message_id"], sid)
            self.assertEqual(rc.text, demo_reply(msg), name)
        wait_until(lambda: tap.chunks(acc["message_id"], "broadcast"), 10.0,
                   msg="a chunk on chat.session.%s.broadcast while Redis was down" % sid)

        cl.redis.start()  # same port, empty
        for p in (a, b):
            wait_until(lambda: p.health()["redis_connected"] is True, 20.0,
                       msg="%s /health redis_connected:true after redis-server returned" % p.pod_id)
        r = cl.redis_client()
        key = "session:connections:%s" % sid
        wait_until(lambda: r.smembers(key) == {member_a, member_b}, 15.0,
                   msg="registration of the open streams restored in Redis (%s == {%s, %s})" % (key, member_a,
                                                                                               member_b))
        self.assertEqual(r.hgetall("pod:connections:pod-a"), {conn_a["connection_id"]: sid})
        self.assertEqual(r.hgetall("pod:connections:pod-b"), {conn_b["connection_id"]: sid})
        for m in (member_a, member_b):
            hb = "heartbeat:%s" % m
            ttl = r.ttl(hb)
            self.assertTrue(0 < ttl <= 30, "%s TTL %r" % (hb, ttl))
        for k in (key, "pod:connections:pod-a", "pod:connections:pod-b"):
            ttl = r.ttl(k)
            self.assertTrue(0 < ttl <= 300, "%s TTL %r" % (k, ttl))

        # routing by registry again: the next reply goes to the pod subjects, not broadcast. The worker has its
        # own Redis connection (reconnect backoff up to 5 s); a new request starts with a fresh routing look-up.
        w = cl.workers[0]
        wait_until(lambda: "redis_reconnected" in w.log(400000), 20.0, msg="the worker's registry reconnected")
        acc2 = b.chat_ok(sid, uid, "after redis returned")
        checks = [ReplyCheck(self, c.collect_until(is_complete_for(acc2["message_id"]), 30), acc2["message_id"], sid)
                  for c in (ca, cb)]
        n2 = len(checks[0].chunks)
        for subj in ("chat.pod.pod-a.response", "chat.pod.pod-b.response"):
            tap.wait_chunks(acc2["message_id"], n2, subjects=(subj,))
        tap.client.flush()
        subjects = {s for s, _, _ in tap.chunks(acc2["message_id"])}
        self.assertEqual(subjects, {"chat.pod.pod-a.response", "chat.pod.pod-b.response"})
        self.assertEqual(tap.chunks(acc2["message_id"], "broadcast"), [],
                         "chunks still on broadcast after Redis returned")


if __name__ == "__main__":
    unittest.main()
