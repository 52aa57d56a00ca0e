"""Admission limits of the real chatd (docs/SECURITY.md#limits): chats per user, replies running
per user, streams per user, requests and connections per client address, X-Forwarded-For only from
a trusted proxy, 429 with Retry-After and the JSON error `rate_limited`, counted in /metrics; and
limits that fail open when Redis is unreachable. (Two pods sharing one bucket through nginx:
test_cluster.)"""

import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import HOST, new_id  # noqa: E402
from infra import free_port, wait_until  # noqa: E402

# Every limit off, so that each test turns on only the one it is about.
OFF = dict(h.NO_LIMITS)


def assert_rate_limited(tc, r, what):
    tc.assertEqual(r.status, 429, "%s: %r" % (what, r))
    tc.assertEqual(r.json()["error"]["code"], "rate_limited", r.body)
    tc.assertGreaterEqual(int(r.header("retry-after")), 1, r.headers)


def metric(srv, name):
    for line in srv.get("/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no %s in /metrics" % name)


def limited_total(srv, limit):
    return metric(srv, 'chat_rate_limited_total{limit="%s"}' % limit)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class ChatRateTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("chat-rate", env=dict(OFF, RATE_LIMIT_CHAT_PER_MINUTE="60", RATE_LIMIT_CHAT_BURST="3",
                                                           WORKER_DEMO_CHUNK_DELAY="1ms"))

    def test_a_burst_then_429_with_the_wait_and_other_users_unaffected(self):
        uid, sid = new_id("u"), new_id("s")
        for n in range(3):
            self.srv.chat_ok(sid, uid, "burst %d" % n)
        r = self.srv.chat(sid, uid, "one too many")
        assert_rate_limited(self, r, "the fourth chat at once")
        self.assertEqual(self.srv.chat(new_id("s"), new_id("u"), "someone else").status, 202)
        time.sleep(int(r.header("retry-after")) + 0.1)
        self.assertEqual(self.srv.chat(sid, uid, "after the wait").status, 202, "Retry-After was not enough")
        self.assertGreaterEqual(limited_total(self.srv, "chat"), 1)

    def test_a_refused_chat_is_not_stored(self):
        uid, sid = new_id("u"), new_id("s")
        statuses = [self.srv.chat(sid, uid, "flood %d" % n).status for n in range(10)]
        self.assertEqual(statuses.count(202), 3, statuses)
        rows = self.srv.db_query("SELECT content FROM messages WHERE session_id = ? AND role = 'user'", (sid,))
        self.assertEqual(len(rows), 3, "refused chats left rows behind: %r" % rows)

    def test_a_flood_keeps_memory_flat(self):
        uid, sid = new_id("u"), new_id("s")
        before = rss_kb(self.srv.proc.pid)
        long_prompt = "lorem ipsum " * 2500  # 30 KB
        started = time.monotonic()
        refused = sum(1 for n in range(400) if self.srv.chat(sid, uid, long_prompt + str(n)).status == 429)
        # The burst of 3, plus one a second refilled while the flood was sent (seconds, not a
        # fixed count: a sanitizer build sends it several times slower).
        allowed = 3 + int(time.monotonic() - started) + 1
        self.assertGreaterEqual(refused, 400 - allowed)
        if not h.UNDER_ASAN:
            self.assertLess(rss_kb(self.srv.proc.pid) - before, 50 * 1024, "400 refused prompts grew the pod by 50 MB")
        self.srv.health()


class RunningRepliesTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("running", env=dict(OFF, RATE_LIMIT_RUNNING_REPLIES="2",
                                                       WORKER_DEMO_CHUNK_DELAY="100ms"))

    def test_at_most_two_replies_at_once_and_a_finished_one_frees_its_place(self):
        uid = new_id("u")
        sid = new_id("s")
        c = self.track(self.srv.sse(sid, uid))
        c.connected()
        first = self.srv.chat_ok(sid, uid, "one")
        self.srv.chat_ok(new_id("s"), uid, "two")
        assert_rate_limited(self, self.srv.chat(new_id("s"), uid, "three"), "a third running reply")
        self.assertEqual(self.srv.chat(new_id("s"), new_id("u"), "another user").status, 202)
        c.collect_until(h.is_complete_for(first["message_id"]), 30)
        self.srv.wait_message_row(first["message_id"], "complete")
        wait_until(lambda: self.srv.chat(new_id("s"), uid, "three again").status == 202, 10,
                     msg="a place freed when the first reply ended")
        self.assertGreaterEqual(limited_total(self.srv, "running_replies"), 1)


class DeletedSessionFreesItsRunningRepliesTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        # Replies of about 30 s, which SIGTERM does not wait for at the end.
        cls.srv = cls.start_server("deleted", env=dict(OFF, RATE_LIMIT_RUNNING_REPLIES="1",
                                                       WORKER_DEMO_CHUNK_DELAY="1s", SERVER_SHUTDOWN_TIMEOUT="1s"))

    def test_a_reply_cut_short_by_deleting_its_session_frees_its_place(self):
        uid, sid = new_id("u"), new_id("s")
        self.srv.chat_ok(sid, uid, "a long one")
        assert_rate_limited(self, self.srv.chat(new_id("s"), uid, "a second"), "a second running reply")
        r = self.srv.request("DELETE", "/api/sessions/%s?user_id=%s" % (sid, uid))
        self.assertEqual(r.status, 200, r.body)
        # The reply runs for about 30 s more had it not been cut: its place is free long before that.
        wait_until(lambda: self.srv.chat(new_id("s"), uid, "after the delete").status == 202, 8,
                   msg="the deleted session's reply kept the user's running-reply place")


class RefusedChatsCostNoChatTest(h.ChatdTestCase):
    """A chat the pod refuses after the chat limit let it through gives its token back."""

    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("refund", env=dict(OFF, RATE_LIMIT_CHAT_PER_MINUTE="1", RATE_LIMIT_CHAT_BURST="2",
                                                      RATE_LIMIT_RUNNING_REPLIES="1", WORKER_DEMO_CHUNK_DELAY="100ms"))

    def test_chats_refused_while_a_reply_runs_leave_the_burst_intact(self):
        uid, sid = new_id("u"), new_id("s")
        chat_refusals = limited_total(self.srv, "chat")
        c = self.track(self.srv.sse(sid, uid))
        c.connected()
        first = self.srv.chat_ok(sid, uid, "one")
        for n in range(4):
            r = self.srv.chat(new_id("s"), uid, "while one runs %d" % n)
            assert_rate_limited(self, r, "a second running reply")
            self.assertIn("running", r.json()["error"]["message"], "refused by the chat rate: %s" % r.body)
        c.collect_until(h.is_complete_for(first["message_id"]), 30)
        self.srv.wait_message_row(first["message_id"], "complete")
        # The burst of two has one token left (a refill takes a minute): the refusals took none.
        wait_until(lambda: self.srv.chat(new_id("s"), uid, "the second of the burst").status == 202, 10,
                   msg="the burst's second token was spent by refused chats")
        self.assertEqual(limited_total(self.srv, "chat"), chat_refusals)

    def test_chats_into_another_users_session_keep_their_tokens(self):
        owner, prober, sid = new_id("u"), new_id("u"), new_id("s")
        self.srv.chat_ok(sid, owner, "mine")
        for n in range(2):
            self.assertEqual(self.srv.chat(sid, prober, "not yours %d" % n).status, 403)
        r = self.srv.chat(new_id("s"), prober, "the prober's own chat")
        assert_rate_limited(self, r, "the burst spent on another user's session")
        self.assertIn("too many chats", r.json()["error"]["message"], r.body)


class ReplyMemoryTest(h.ChatdTestCase):
    """BUFFER_MAX_BYTES: one memory budget for replies in flight; full means 503, never growth."""

    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("reply-memory", env=dict(OFF, BUFFER_MAX_BYTES="4096", WORKER_DEMO_CHUNK_DELAY="20ms",
                                                              WORKER_DEMO_WORDS_PER_CHUNK="1"))

    def test_new_chats_wait_while_the_replies_in_flight_fill_the_budget(self):
        uid, sid = new_id("u"), new_id("s")
        c, _ = self.open_sse(self.srv, sid, uid)
        acc = self.srv.chat_ok(sid, uid, "a long answer please " * 40)
        wait_until(lambda: metric(self.srv, "chat_reply_memory_bytes") >= 4096, 20,
                   msg="the running reply fills the 4 KiB budget")
        r = self.srv.chat(new_id("s"), new_id("u"), "anyone else meanwhile")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["error"]["code"], "unavailable", r.body)
        self.assertIn("memory", r.json()["error"]["message"])
        self.assertEqual(r.header("retry-after"), "2")
        self.assertGreaterEqual(metric(self.srv, "chat_memory_full_refusals_total"), 1)
        # the reply in flight is not cut short: it streams and is stored whole
        evs = c.collect_until(h.is_complete_for(acc["message_id"]), 60)
        rc = h.ReplyCheck(self, evs, acc["message_id"], sid)
        self.assertEqual(self.srv.wait_message_row(acc["message_id"], "complete")[0]["content"], rc.text)
        wait_until(lambda: metric(self.srv, "chat_reply_memory_bytes") < 4096, 10, msg="the budget freed")
        self.assertEqual(self.srv.chat(new_id("s"), new_id("u"), "and now").status, 202)
        self.assertIn("reply_memory_full", self.srv.log())


class ReplySizeTest(h.ChatdTestCase):
    """BUFFER_MAX_REPLY_BYTES: a reply longer than that ends there, and its worker stops generating it."""

    @classmethod
    def setUpClass(cls):
        # One word a chunk, 100 ms apart: the whole reply would stream for about 24 s.
        cls.srv = cls.start_server("reply-size", env=dict(OFF, BUFFER_MAX_REPLY_BYTES="1024", WORKER_DEMO_CHUNK_DELAY="100ms",
                                                            WORKER_DEMO_WORDS_PER_CHUNK="1"))

    def test_a_reply_too_large_ends_stored_incomplete_and_its_generation_is_cancelled(self):
        uid, sid = new_id("u"), new_id("s")
        c, _ = self.open_sse(self.srv, sid, uid)
        mid = self.srv.chat_ok(sid, uid, "a long answer please " * 40)["message_id"]
        evs = c.collect_until(h.is_complete_for(mid), 15)
        errors = [e.json() for e in evs if e.event == "error"]
        self.assertEqual([e["code"] for e in errors], ["reply_too_large"], errors)
        shown = "".join(e.json()["chunk"] for e in evs if e.event == "chunk")
        row = self.srv.wait_message_row(mid, "incomplete")[0]
        self.assertEqual(row["content"], shown, "the text that fit is stored")
        self.assertTrue(row["content"] and len(row["content"]) < 1024, row)

        def cancelled_line():
            return [ln for ln in self.srv.log().splitlines() if "generation_cancelled" in ln and mid in ln]
        # Well before the 24 s the reply would take: the pod told the in-process worker to stop.
        wait_until(lambda: cancelled_line(), 5, msg="the worker went on generating a reply the pod ended")
        self.assertIn("started=true", cancelled_line()[0], "cancelled while it ran, not before")
        self.assertTrue(any("reply_generation_stopped" in ln and mid in ln for ln in self.srv.log().splitlines()))


class StreamsPerUserTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("streams", env=dict(OFF, RATE_LIMIT_STREAMS_PER_USER="2"))

    def test_a_third_stream_is_refused_until_one_closes(self):
        uid = new_id("u")
        a = self.track(self.srv.sse(new_id("s"), uid))
        a.connected()
        b = self.track(self.srv.sse(new_id("s"), uid))
        b.connected()
        refused_session = new_id("s")
        c = self.track(self.srv.sse(refused_session, uid))
        c.open()
        self.assertEqual(c.status, 429)
        self.assertEqual(c.json_body()["error"]["code"], "rate_limited")
        listed = self.srv.get("/api/sessions?user_id=%s" % uid).json()["sessions"]
        self.assertNotIn(refused_session, [s["session_id"] for s in listed],
                         "a refused stream made its session all the same")
        other = self.track(self.srv.sse(new_id("s"), new_id("u")))
        other.connected()
        a.close()
        wait_until(lambda: self.srv.sse(new_id("s"), uid).open().status == 200, 10,
                     msg="a closed stream frees its place")
        self.assertGreaterEqual(limited_total(self.srv, "streams"), 1)


class AddressRateTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("address", env=dict(OFF, RATE_LIMIT_IP_PER_MINUTE="60"))  # burst 10
        cls.proxied = cls.start_server("proxied", env=dict(OFF, RATE_LIMIT_IP_PER_MINUTE="60",
                                                           SERVER_TRUSTED_PROXIES="127.0.0.1"))

    def test_requests_per_address_but_never_the_probes(self):
        statuses = [self.srv.get("/api/sessions?user_id=%s" % new_id("u")).status for _ in range(15)]
        self.assertEqual(statuses.count(200), 10, statuses)
        assert_rate_limited(self, self.srv.get("/api/sessions?user_id=x"), "past the burst")
        for path in ("/health", "/ready", "/metrics"):
            self.assertEqual(self.srv.get(path).status, 200, "%s must never be limited" % path)
        # Not a trusted proxy: X-Forwarded-For does not make a new client.
        r = self.srv.get("/api/sessions?user_id=x", headers={"X-Forwarded-For": "198.51.100.1"})
        self.assertEqual(r.status, 429)

    def test_behind_a_trusted_proxy_each_forwarded_client_counts_alone(self):
        for client in ("198.51.100.1", "198.51.100.2"):
            statuses = [self.proxied.get("/api/sessions?user_id=x", headers={"X-Forwarded-For": client}).status
                        for _ in range(12)]
            self.assertEqual(statuses.count(200), 10, "%s: %s" % (client, statuses))
        # A client naming itself left of what the proxy appended gains nothing.
        statuses = [self.proxied.get("/api/sessions?user_id=x",
                                     headers={"X-Forwarded-For": "203.0.113.%d, 198.51.100.1" % n}).status
                    for n in range(3)]
        self.assertEqual(statuses, [429] * 3)
        # Nor when the proxy added a line of its own below the client's: the lines are one list.
        statuses = []
        for n in range(3):
            conn = h.HttpConn(self.proxied.port)
            try:
                conn.send_raw(("GET /api/sessions?user_id=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               "X-Forwarded-For: 203.0.114.%d\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n" % n)
                              .encode())
                statuses.append(conn.read_response("GET", target="/api/sessions").status)
            finally:
                conn.close()
        self.assertEqual(statuses, [429] * 3)


class ConnectionsPerAddressTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("connections", env=dict(OFF, SERVER_MAX_CONNECTIONS_PER_IP="5"))

    def test_idle_connections_of_one_address_are_capped_and_others_still_served(self):
        conns = []
        try:
            # From an address of their own (the whole 127/8 is loopback): nothing else, such as the
            # harness's readiness probe still being closed, shares the count.
            for _ in range(6):
                conns.append(connect_from("127.0.0.3", self.srv.port))
            # Whichever of the six the pod accepted last is over the cap: it alone is refused.
            time.sleep(0.3)  # the pod accepts them all
            for s in conns:
                s.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
            heads = [s.recv(4096).decode(errors="replace") for s in conns]
            refused = [head for head in heads if head.startswith("HTTP/1.1 429")]
            self.assertEqual(len(refused), 1, "one connection over the cap of 5 must be refused: %r"
                             % [head.split("\r\n", 1)[0] for head in heads])
            self.assertIn('"rate_limited"', refused[0])
            self.assertEqual(sum(head.startswith("HTTP/1.1 200") for head in heads), 5)
            # A probe still gets through the cap (one answer, then the connection closes).
            self.assertEqual(first_answer("127.0.0.3", self.srv.port, "/health"), "HTTP/1.1 200 OK")
            self.assertEqual(first_answer("127.0.0.3", self.srv.port), "HTTP/1.1 429 Too Many Requests")
            # Another address is served at once.
            other = connect_from("127.0.0.2", self.srv.port)
            other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(other.recv(4096).startswith(b"HTTP/1.1 200"))
            other.close()
        finally:
            for s in conns:
                s.close()
        wait_until(lambda: self.srv.get("/health").status == 200, 5, msg="the address is served again")
        self.assertGreaterEqual(limited_total(self.srv, "connections"), 1)

    def test_over_the_cap_a_probe_gets_one_answer_and_idle_sockets_only_two_places(self):
        def connect():
            return connect_from("127.0.0.9", self.srv.port)
        held = [connect() for _ in range(5)]  # the address's five places
        try:
            time.sleep(0.3)
            refused_before = limited_total(self.srv, "connections")
            # A probe over the cap: answered once, then the connection closes (what was pipelined is dropped).
            probe = connect()
            probe.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /api HTTP/1.1\r\nHost: x\r\n\r\n")
            got = read_to_end(probe)
            self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:200])
            self.assertEqual(got.count(b"HTTP/1.1 "), 1, "more than one answer over the cap: %r" % got[:600])
            self.assertEqual(limited_total(self.srv, "connections"), refused_before, "an answered probe counted as refused")
            # Idle sockets over the cap wait for a request in two places at most; a third is refused at once.
            idle = [connect() for _ in range(2)]
            time.sleep(0.3)
            third = connect()
            self.assertTrue(third.recv(4096).startswith(b"HTTP/1.1 429"), "a third idle socket over the cap")
            third.close()
            self.assertEqual(limited_total(self.srv, "connections"), refused_before + 1)
            # And a waiting place is given back after the short wait for a request (2 s).
            t0 = time.monotonic()
            self.assertEqual(idle[0].recv(4096), b"", "an idle socket over the cap is closed")
            self.assertLess(time.monotonic() - t0, 4.0)
            for s in idle:
                s.close()
            time.sleep(0.3)
            self.assertEqual(first_answer("127.0.0.9", self.srv.port, "/ready"), "HTTP/1.1 200 OK")
        finally:
            for s in held:
                s.close()


def connect_from(address, port):
    """A connection to the pod from a loopback `address` of the test's choosing (the whole 127/8 is loopback)."""
    s = socket.socket()
    s.bind((address, 0))
    s.settimeout(5)
    try:
        s.connect((HOST, port))
    except OSError:
        s.close()
        raise
    return s


def read_to_end(s):
    """Everything the pod sends until it closes the connection, which is then closed here too."""
    got = b""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return got
            got += data
    finally:
        s.close()


def open_stream_from(address, port):
    """A raw SSE stream from a loopback `address`, read until its `connected` event."""
    s = connect_from(address, port)
    s.sendall(("GET /api/sse?session_id=%s&user_id=%s HTTP/1.1\r\nHost: x\r\n\r\n"
               % (new_id("s"), new_id("u"))).encode())
    head = b""
    while b"event: connected" not in head:
        data = s.recv(4096)
        if not data:
            raise AssertionError("stream closed before connecting: %r" % head[:300])
        head += data
    return s


def metric_from(address, port, name):
    """A metric read over a connection of its own (a full pod answers /metrics as a probe)."""
    s = connect_from(address, port)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    text = read_to_end(s)
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no %s in /metrics" % name)


def first_answer(address, port, path="/api"):
    """The status line a new connection from `address` gets for GET `path`."""
    s = connect_from(address, port)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        return s.recv(4096).split(b"\r\n", 1)[0].decode()
    finally:
        s.close()


class StreamsPerAddressTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("stream-connections", env=dict(OFF, SERVER_MAX_CONNECTIONS_PER_IP="3"))

    def test_open_streams_count_as_their_address_connections(self):
        streams = [open_stream_from("127.0.0.5", self.srv.port) for _ in range(3)]
        try:
            self.assertEqual(first_answer("127.0.0.5", self.srv.port), "HTTP/1.1 429 Too Many Requests",
                             "three open streams and one more connection from the same address")
            self.assertEqual(first_answer("127.0.0.6", self.srv.port), "HTTP/1.1 200 OK")
            streams.pop().close()
            wait_until(lambda: first_answer("127.0.0.5", self.srv.port) == "HTTP/1.1 200 OK", 5,
                       msg="a closed stream gives its address's place back")
        finally:
            for s in streams:
                s.close()


class ServerCapacityTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_server("capacity", env=dict(OFF, SERVER_MAX_CONNECTIONS="4"))

    def test_the_limit_is_the_number_of_open_connections_streams_included(self):
        held = []
        try:
            held = [open_stream_from("127.0.0.7", self.srv.port) for _ in range(2)]
            for _ in range(2):  # idle connections count too
                s = socket.socket()
                s.connect((HOST, self.srv.port))
                held.append(s)
            time.sleep(0.3)  # the pod accepts them
            self.assertEqual(first_answer("127.0.0.8", self.srv.port), "HTTP/1.1 503 Service Unavailable",
                             "a fifth connection with SERVER_MAX_CONNECTIONS=4")
            refused = metric_from("127.0.0.8", self.srv.port, "chat_connections_refused_total")
            self.assertGreaterEqual(refused, 1)
            # The orchestrator's probes still get through a full pod.
            for probe in ("/health", "/ready", "/metrics"):
                self.assertEqual(first_answer("127.0.0.8", self.srv.port, probe), "HTTP/1.1 200 OK", probe)
            self.assertEqual(metric_from("127.0.0.8", self.srv.port, "chat_connections_refused_total"), refused,
                             "answered probes counted as refused")
            held.pop().close()
            wait_until(lambda: first_answer("127.0.0.8", self.srv.port) == "HTTP/1.1 200 OK", 5,
                       msg="the fourth connection is within the limit")
        finally:
            for s in held:
                s.close()

    def test_a_refused_request_whose_body_is_still_coming_gets_its_answer_not_a_reset(self):
        held = []
        try:
            held = [socket.create_connection((HOST, self.srv.port)) for _ in range(4)]
            time.sleep(0.3)  # the pod accepts them: a fifth is over the limit
            s = connect_from("127.0.0.8", self.srv.port)
            body = b"x" * 50_000
            s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:1000])
            time.sleep(0.3)  # answered and closed meanwhile; the rest of the body arrives after
            try:
                s.sendall(body[1000:])
                s.shutdown(socket.SHUT_WR)
                answer = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                answer = b"reset"  # what the server's close with bytes unread sends
            finally:
                s.close()
            self.assertTrue(answer.startswith(b"HTTP/1.1 503"), answer[:80])
        finally:
            for c in held:
                c.close()


class RedisDownTest(h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        # Redis configured but not there: the limits cannot decide and must not refuse.
        cls.srv = cls.start_server("redis-down", env=dict(OFF, REDIS_HOST="127.0.0.1", REDIS_PORT=str(free_port()),
                                                          RATE_LIMIT_CHAT_PER_MINUTE="1", RATE_LIMIT_CHAT_BURST="1",
                                                          WORKER_DEMO_CHUNK_DELAY="1ms"))

    def test_limits_fail_open_with_a_warning_and_a_counter(self):
        uid, sid = new_id("u"), new_id("s")
        for n in range(5):
            self.srv.chat_ok(sid, uid, "while redis is down %d" % n)
        text = self.srv.get("/metrics").body.decode()
        undecided = [l for l in text.splitlines() if l.startswith("chat_rate_limit_undecided_total ")]
        self.assertTrue(undecided and float(undecided[0].split()[1]) >= 5, undecided)
        self.assertIn("rate_limits_undecided", self.srv.log())


if __name__ == "__main__":
    unittest.main()
