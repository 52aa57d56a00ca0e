"""chatd on PostgreSQL (DB_HOST set), end to end against the real binaries.

  PostgresStoreTest        one pod (in-process bus and demo worker) on PostgreSQL: the streamed reply
                           is stored once and whole; stored without any client; history of a session
                           reaches the next turn (also across a pod restart, limited by CHAT_HISTORY_TURNS)
  PostgresOutageTest       PostgreSQL stopped while replies stream and chats are posted, then started
                           again: no completed reply is lost, /health shows db_connected:false meanwhile
  DistributedPostgresTest  two pods + NATS + Redis + one chat-worker on one PostgreSQL: SSE on both pods
                           for one session stores the reply exactly once; the WorkflowRequest on NATS
                           carries the earlier turns as conversation_history; stored without any client
  FirstWriteWinsTest       two pods get different chunks for one message_id: the stored row stays the first
                           finished version after the second pod wrote too
  PodsStartTogetherTest    three pods started at once against an empty database all come up
"""

import datetime
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import infra  # noqa: E402
import pg_infra  # noqa: E402

FIRST_TURN = "This is the first message of our conversation."


def earlier(n):
    return "We have exchanged %d earlier messages in this conversation." % n


def pg_time(s):
    return datetime.datetime.fromisoformat(s)


def completed(message_id):
    """Predicate: the message_complete event of message_id."""
    return lambda e: e.event == "message_complete" and e.json().get("message_id") == message_id


def chunk_seen(message_id, chunk_id):
    return lambda e: e.event == "chunk" and e.json().get("message_id") == message_id and e.json().get("chunk_id") == chunk_id


class PgMixin:
    """Helpers on top of a PostgresServer in self.pg."""

    pg = None

    def pg_messages(self, db, session_id):
        return self.pg.query(db, "SELECT * FROM messages WHERE session_id = :'sid' ORDER BY created_at, message_id",
                             sid=session_id)

    def pg_message(self, db, message_id):
        return self.pg.query(db, "SELECT * FROM messages WHERE message_id = :'mid'", mid=message_id)

    def wait_pg_message(self, db, message_id, timeout=30.0, status="complete"):
        rows = self.pg.wait_rows(db, "SELECT * FROM messages WHERE message_id = :'mid'",
                                 lambda rows: bool(rows) and (status is None or rows[0]["status"] == status),
                                 timeout=timeout, mid=message_id)
        self.assertTrue(rows, "message %s not stored in PostgreSQL within %.0fs" % (message_id, timeout))
        self.assertEqual(len(rows), 1, rows)
        if status is not None:
            self.assertEqual(rows[0]["status"], status, rows[0])
        return rows[0]

    def assert_stored_reply(self, db, message_id, session_id, text, token_count=None, model=None):
        """The reply row: once, whole, complete, with token_count and metadata."""
        row = self.wait_pg_message(db, message_id)
        self.assertEqual(row["role"], "assistant", row)
        self.assertEqual(row["session_id"], session_id, row)
        self.assertEqual(row["content"], text, "stored content differs from the concatenated SSE chunks")
        self.assertEqual(row["status"], "complete", row)
        self.assertIsInstance(row["token_count"], int, row)
        self.assertGreater(row["token_count"], 0, row)
        if token_count is not None:
            self.assertEqual(row["token_count"], token_count, "token_count vs message_complete: %r" % row)
        md = row["metadata"]
        self.assertIsInstance(md, dict, "metadata is not a JSON object: %r" % row)
        self.assertTrue(md.get("model"), "metadata.model: %r" % md)
        if model is not None:
            self.assertEqual(md.get("model"), model, md)
        self.assertEqual(md.get("finish_reason"), "stop", "metadata.finish_reason: %r" % md)
        n = self.pg.scalar(db, "SELECT count(*) AS n FROM messages WHERE message_id = :'mid'", mid=message_id)
        self.assertEqual(n, 1, "message %s stored %s times" % (message_id, n))
        return row

    def print_pg_log(self):
        if self.pg is not None:
            sys.stderr.write("\n----- PostgreSQL log (test %s failed) -----\n%s\n" % (self.id(), self.pg.log_tail(4000)))

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            self.print_pg_log()
        if getattr(self, "own_pg", None) is not None:
            self.own_pg.cleanup()  # after the log was printed
        return out


# --------------------------------------------------------------------------
# one pod on PostgreSQL
# --------------------------------------------------------------------------

class PostgresStoreTest(PgMixin, h.ChatdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pg_infra.PostgresServer(name="pg-store")
        try:
            cls.pg.start()
            cls.db = cls.pg.create_database()
            cls.srv = cls.start_server("pg-store", env=cls.pg.chatd_env(cls.db, WORKER_DEMO_CHUNK_DELAY="10ms"))
        except BaseException:
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.pg.cleanup()

    def reference(self, message):
        """The whole first-turn reply to `message`, streamed in a fresh session."""
        rc, _, c = self.run_reply(self.srv, h.new_id("ref"), h.new_id("u"), message)
        c.close()
        return rc

    def test_uses_postgres_with_the_schema(self):
        d = self.srv.health()
        self.assertIs(d["db_connected"], True, d)
        self.assertEqual((d.get("components") or {}).get("store"), "postgres", "chatd did not select PostgreSQL: %r" % d)
        cols = self.pg.query(self.db, "SELECT table_name, column_name, data_type FROM information_schema.columns "
                                      "WHERE table_schema = 'public'")
        have = {(c["table_name"], c["column_name"]): c["data_type"] for c in cols}
        for col in ("session_id", "user_id", "title", "ai_provider", "model_name", "created_at", "updated_at",
                    "last_message_at"):
            self.assertIn(("chat_sessions", col), have, "chat_sessions.%s missing: %r" % (col, sorted(have)))
        for col in ("message_id", "session_id", "role", "content", "token_count", "status", "metadata", "created_at"):
            self.assertIn(("messages", col), have, "messages.%s missing: %r" % (col, sorted(have)))
        self.assertEqual(have[("messages", "metadata")], "jsonb")
        self.assertGreaterEqual(self.pg.scalar(self.db, "SELECT count(*) FROM schema_migrations"), 1)

    def test_streamed_reply_stored_once_and_whole(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        msg = "Store this exchange in PostgreSQL, please: kiwi-4471."
        rc, acc, c = self.run_reply(self.srv, sid, uid, msg)
        mid = acc["message_id"]
        self.assertIn("kiwi-4471", rc.text)
        row = self.assert_stored_reply(self.db, mid, sid, rc.text, token_count=rc.complete["token_count"],
                                       model=rc.metadata["model"])
        users = [m for m in self.pg_messages(self.db, sid) if m["role"] == "user"]
        self.assertEqual([u["content"] for u in users], [msg], "user message rows: %r" % users)
        self.assertIn(users[0]["status"], ("complete", "error", "cancelled", "incomplete"), users[0])
        self.assertNotEqual(users[0]["message_id"], mid)
        self.assertLessEqual(pg_time(users[0]["created_at"]), pg_time(row["created_at"]), (users[0], row))
        sess = self.pg.query(self.db, "SELECT * FROM chat_sessions WHERE session_id = :'sid'", sid=sid)
        self.assertEqual(len(sess), 1, sess)
        self.assertEqual(sess[0]["user_id"], uid, sess)
        self.assertTrue(sess[0]["title"], sess)
        # nothing arrives later: still exactly the two rows
        time.sleep(1.0)
        rows = self.pg_messages(self.db, sid)
        self.assertEqual(sorted((r["role"], r["message_id"]) for r in rows),
                         sorted([("user", users[0]["message_id"]), ("assistant", mid)]), rows)

    def test_reply_stored_without_any_client(self):
        msg = "Nobody is watching this reply: plum-0192."
        ref = self.reference(msg)
        sid, uid = h.new_id("s"), h.new_id("u")
        acc = self.srv.chat_ok(sid, uid, msg)
        self.assert_stored_reply(self.db, acc["message_id"], sid, ref.text, token_count=ref.complete["token_count"])

    def test_reply_stored_when_client_left_before_first_chunk(self):
        msg = "The client leaves before the first chunk: fig-5531."
        ref = self.reference(msg)
        sid, uid = h.new_id("s"), h.new_id("u")
        c, _ = self.open_sse(self.srv, sid, uid)
        c.close()
        acc = self.srv.chat_ok(sid, uid, msg)
        self.assert_stored_reply(self.db, acc["message_id"], sid, ref.text, token_count=ref.complete["token_count"])

    def test_reply_stored_when_client_left_mid_reply(self):
        msg = "The client leaves in the middle of the reply: date-7741."
        ref = self.reference(msg)
        sid, uid = h.new_id("s"), h.new_id("u")
        c, _ = self.open_sse(self.srv, sid, uid)
        acc = self.srv.chat_ok(sid, uid, msg)
        c.collect_until(chunk_seen(acc["message_id"], 1), 10)
        c.close()
        self.assert_stored_reply(self.db, acc["message_id"], sid, ref.text, token_count=ref.complete["token_count"])

    def turn(self, srv, sid, uid, msg):
        rc, acc, c = self.run_reply(srv, sid, uid, msg)
        c.close()
        self.assert_stored_reply(self.db, acc["message_id"], sid, rc.text)
        return rc

    def test_second_turn_carries_the_first(self):
        sid, uid = h.new_id("s"), h.new_id("u")
        t1 = self.turn(self.srv, sid, uid, "first turn")
        self.assertIn(FIRST_TURN, t1.text)
        t2 = self.turn(self.srv, sid, uid, "second turn")
        self.assertIn(earlier(2), t2.text, "the second turn should get the first turn (2 messages) as history")
        t3 = self.turn(self.srv, sid, uid, "third turn")
        self.assertIn(earlier(4), t3.text)
        # another session of the same user starts afresh
        other = self.turn(self.srv, h.new_id("s"), uid, "unrelated")
        self.assertIn(FIRST_TURN, other.text, "history leaked from another session")

    def test_history_limited_by_chat_history_turns(self):
        srv = self.new_server("pg-turns", env=self.pg.chatd_env(self.db, WORKER_DEMO_CHUNK_DELAY="5ms",
                                                                  CHAT_HISTORY_TURNS="3"))
        sid, uid = h.new_id("s"), h.new_id("u")
        self.assertIn(FIRST_TURN, self.turn(srv, sid, uid, "one").text)
        self.assertIn(earlier(2), self.turn(srv, sid, uid, "two").text)
        self.assertIn(earlier(3), self.turn(srv, sid, uid, "three").text, "CHAT_HISTORY_TURNS=3 caps the history")
        self.assertIn(earlier(3), self.turn(srv, sid, uid, "four").text)

    def test_history_comes_from_the_database_after_a_restart(self):
        env = self.pg.chatd_env(self.db, WORKER_DEMO_CHUNK_DELAY="5ms")
        first = self.new_server("pg-restart-1", env=env)
        sid, uid = h.new_id("s"), h.new_id("u")
        self.assertIn(FIRST_TURN, self.turn(first, sid, uid, "before the restart").text)
        self.assertEqual(first.stop(), 0, "exit code after SIGTERM")
        second = self.new_server("pg-restart-2", env=env)
        self.assertIn(earlier(2), self.turn(second, sid, uid, "after the restart").text,
                      "a new pod on the same database should send the stored turn as history")
        # and the other pod of the class sees it too (same database)
        self.assertIn(earlier(4), self.turn(self.srv, sid, uid, "on another pod").text)

    def test_nul_and_non_finite_numbers_are_refused_before_the_store(self):
        # PostgreSQL cannot store NUL in text; chatd refuses it with a 400 before any write (docs/API.md §2.5)
        sid, uid = h.new_id("s"), h.new_id("u")
        for body in ({"message": "a\x00b"}, {"message": "x", "context": {"system_prompt": "p\x00"}}):
            with self.subTest(body=body):
                full = {"session_id": sid, "user_id": uid}
                full.update(body)
                r = self.srv.post_json("/api/chat", full)
                self.assertError(r, 400, "invalid_request", "NUL on PostgreSQL")
        for n in ("1e400", "-1e400"):
            with self.subTest(temperature=n):
                raw = '{"session_id":"%s","user_id":"%s","message":"x","context":{"temperature":%s}}' % (sid, uid, n)
                self.assertError(self.srv.post_json("/api/chat", raw), 400, "invalid_request", "temperature " + n)
        self.assertEqual(self.pg.query(self.db, "SELECT * FROM chat_sessions WHERE session_id = :'sid'", sid=sid), [],
                         "a refused request created the session")
        self.assertEqual(self.srv.health()["status"], "healthy")


# --------------------------------------------------------------------------
# PostgreSQL outage
# --------------------------------------------------------------------------

class _Collector(threading.Thread):
    """Reads one SSE client until message_complete of message_id (bounded)."""

    def __init__(self, client, message_id, timeout):
        super().__init__(daemon=True)
        self.client, self.message_id, self.timeout = client, message_id, timeout
        self.events, self.error = None, None

    def run(self):
        try:
            self.events = self.client.collect_until(completed(self.message_id), self.timeout)
        except BaseException as e:  # noqa: BLE001
            self.error = e


class PostgresOutageTest(PgMixin, h.ChatdTestCase):
    """Each test has its own PostgreSQL (it is stopped) and its own pod."""

    def setUp(self):
        super().setUp()
        self.pg = self.own_pg = pg_infra.PostgresServer(name="pg-outage")  # removed in run()
        self.pg.start()
        self.db = self.pg.create_database()

    def tearDown(self):
        try:
            super().tearDown()  # kills the pods first
        finally:
            self.pg.stop(mode="immediate")

    def run_outage(self, mode):
        # ~30 chunks at 100 ms: each reply streams for ~3 s, through the outage
        srv = self.new_server("pg-outage-%s" % mode, env=self.pg.chatd_env(self.db, WORKER_DEMO_CHUNK_DELAY="100ms"))
        uid = h.new_id("u")
        msg = "Outage check: this reply must reach the database (%s)." % mode
        accepted = {}  # message_id -> (session_id, user message text)
        streams = {}   # session_id -> SSE client
        sessions = [h.new_id("sa"), h.new_id("sb"), h.new_id("sc")]
        for i, sid in enumerate(sessions):
            if i < 2:
                streams[sid] = self.open_sse(srv, sid, uid)[0]
            acc = srv.chat_ok(sid, uid, msg)
            accepted[acc["message_id"]] = (sid, msg)
        mids = list(accepted)
        first = streams[sessions[0]]
        first_events = first.collect_until(chunk_seen(mids[0], 2), 15)
        collectors = []
        for mid in mids[:2]:
            sid = accepted[mid][0]
            col = _Collector(streams[sid], mid, 40.0)
            if sid == sessions[0]:
                col.prefix = first_events
            collectors.append(col)
            col.start()

        self.pg.stop(mode=mode)
        t_down = time.monotonic()
        health_seen, ready_seen, posts = [], [], []
        n = 0
        while True:
            now = time.monotonic()
            r = srv.get("/health", timeout=5.0)
            self.assertEqual(r.status, 200, "/health during the outage: %r" % r)
            d = r.json()
            health_seen.append((round(now - t_down, 2), d.get("db_connected"), d.get("status")))
            ready_seen.append(srv.get("/ready", timeout=5.0).status)
            if n < 12 and now - t_down > 0.2 * n:
                sid = sessions[0] if n % 2 == 0 else h.new_id("sd")
                text = "posted during the outage #%d %s" % (n, h.new_id("x"))
                r = srv.chat(sid, uid, text)
                posts.append((sid, text, r))
                if r.status == 202:
                    accepted[r.json()["message_id"]] = (sid, text)
                n += 1
            streams_done = all(not c.is_alive() for c in collectors)
            saw_down = any(db is False for _, db, _ in health_seen)
            if streams_done and saw_down and n >= 12 and now - t_down > 6.0:
                break
            self.assertLess(now - t_down, 45.0, "outage loop did not finish: streams done %s, db down seen %s"
                            % (streams_done, saw_down))
            time.sleep(0.1)

        # during the outage
        self.assertTrue(any(db is False for _, db, _ in health_seen),
                        "/health never showed db_connected:false while PostgreSQL was down: %r" % health_seen[:50])
        for t, db, status in health_seen:
            if db is False:
                self.assertEqual(status, "degraded", "/health status while the database is down: %r" % health_seen)
        self.assertIn(503, ready_seen, "/ready never answered 503 while PostgreSQL was down")
        for sid, text, r in posts:
            self.assertIn(r.status, (202, 503), "POST /api/chat during the outage: %r" % r)
            if r.status == 503:
                self.assertError(r, 503, msg="POST during the outage")
                self.assertTrue(r.header("retry-after"), "503 without Retry-After: %r" % r)
        for col in collectors:
            col.join(1.0)
            self.assertIsNone(col.error, "stream of %s during the outage: %r" % (col.message_id, col.error))
            evs = getattr(col, "prefix", []) + col.events
            rc = h.ReplyCheck(self, evs, col.message_id, accepted[col.message_id][0])
            col.text, col.tokens = rc.text, rc.complete["token_count"]
        self.assertEqual(collectors[0].text, collectors[1].text)

        # back again
        self.pg.start()
        t_up = time.monotonic()
        infra.wait_until(lambda: srv.health().get("db_connected") is True, 30.0,
                         msg="/health db_connected:true after PostgreSQL returned")
        for mid, (sid, text) in accepted.items():
            row = self.wait_pg_message(self.db, mid, timeout=max(1.0, 30.0 - (time.monotonic() - t_up)))
            self.assertEqual(row["role"], "assistant", row)
            self.assertEqual(row["session_id"], sid, row)
            self.assertGreater(row["token_count"], 0, row)
            self.assertEqual((row["metadata"] or {}).get("finish_reason"), "stop", row)
            if text == msg:
                self.assertEqual(row["content"], collectors[0].text, "stored reply %s differs from the stream" % mid)
                self.assertEqual(row["token_count"], collectors[0].tokens, row)
            users = self.pg.query(self.db, "SELECT * FROM messages WHERE session_id = :'sid' AND role = 'user' "
                                           "AND content = :'text'", sid=sid, text=text)
            self.assertEqual(len(users), 1, "user message of accepted reply %s: %r" % (mid, users))
        for sid, text, r in posts:
            if r.status == 503:
                users = self.pg.query(self.db, "SELECT message_id FROM messages WHERE content = :'text'", text=text)
                self.assertEqual(users, [], "a chat refused with 503 left its user message behind: %r" % text)
        total = self.pg.scalar(self.db, "SELECT count(*) FROM messages WHERE role = 'assistant'")
        self.assertEqual(total, len(accepted), "assistant rows vs accepted chats")
        # and service is normal again
        sid = h.new_id("after")
        rc, acc, c = self.run_reply(srv, sid, uid, "after the outage")
        self.assert_stored_reply(self.db, acc["message_id"], sid, rc.text)
        sys.stderr.write("\n[%s] outage: %d posts while down, %d accepted (202), %d refused (503); "
                         "db_connected false from %.2fs\n"
                         % (self.id(), len(posts), sum(1 for p in posts if p[2].status == 202),
                            sum(1 for p in posts if p[2].status == 503),
                            min([t for t, db, _ in health_seen if db is False] or [-1])))

    def test_outage_fast_stop(self):
        self.run_outage("fast")

    def test_quick_restarts_while_replies_finish(self):
        # Replies finish one after another while PostgreSQL is restarted three times: each is stored once.
        srv = self.new_server("pg-restarts", env=self.pg.chatd_env(self.db, WORKER_DEMO_CHUNK_DELAY="30ms"))
        uid = h.new_id("u")
        accepted = {}
        for i in range(8):
            sid = h.new_id("s")
            words = " ".join("w%d" % j for j in range(20 * i))  # longer and longer replies: staggered ends
            acc = srv.chat_ok(sid, uid, "restart check %d %s" % (i, words))
            accepted[acc["message_id"]] = sid
        for _ in range(3):
            time.sleep(0.4)
            self.pg.stop(mode="fast")
            time.sleep(0.3)
            self.pg.start()
        t0 = time.monotonic()
        for mid, sid in accepted.items():
            row = self.wait_pg_message(self.db, mid, timeout=max(1.0, 30.0 - (time.monotonic() - t0)))
            self.assertEqual(row["session_id"], sid, row)
            self.assertEqual((row["metadata"] or {}).get("finish_reason"), "stop", row)
            self.assertIn("restart check", row["content"], row)
        self.assertEqual(self.pg.scalar(self.db, "SELECT count(*) FROM messages WHERE role = 'assistant'"),
                         len(accepted))
        self.assertEqual(self.pg.scalar(self.db, "SELECT count(*) FROM messages WHERE role = 'user'"), len(accepted))
        infra.wait_until(lambda: srv.health().get("db_connected") is True, 30.0, msg="db_connected again")

    def test_outage_crash(self):
        self.run_outage("immediate")


# --------------------------------------------------------------------------
# distributed: NATS + Redis + chat-worker + pods on one PostgreSQL
# --------------------------------------------------------------------------

class DistributedPostgresTest(PgMixin, infra.ClusterTestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pg_infra.PostgresServer(name="pg-dist")
        try:
            cls.pg.start()
            cls.db = cls.pg.create_database()
            cls.cluster = infra.Cluster(pods=2, workers=1, pod_env=cls.pg.chatd_env(cls.db),
                                        worker_env={"WORKER_DEMO_CHUNK_DELAY": "15ms"})
            cls.cluster.start()
        except BaseException:
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.cluster is not None:
                problems = cls.cluster.stop_gracefully()
                cls.cluster.cleanup()
                if problems:
                    raise AssertionError("; ".join(problems))
        finally:
            cls.pg.cleanup()

    def open_streams(self, pods, sid, uid):
        """SSE streams on each pod, waited for until the Redis registry lists exactly them."""
        streams, members = [], set()
        for p in pods:
            c, d = self.open_sse(p, sid, uid)
            streams.append(c)
            members.add("%s:%s" % (p.pod_id, d["connection_id"]))
        self.wait_registry(sid, members)
        return streams

    def wait_registry(self, sid, members):
        rc = self.cluster.redis_client()
        key = "session:connections:%s" % sid
        infra.wait_until(lambda: rc.smembers(key) == set(members), 10.0,
                         msg="registry %s == %r (have %r)" % (key, members, members))

    def post_and_check(self, pod, sid, uid, msg, streams):
        """POST to pod; every stream gets the whole reply (the same chunks); returns (ReplyCheck, message_id)."""
        acc = pod.chat_ok(sid, uid, msg)
        mid = acc["message_id"]
        checks = [h.ReplyCheck(self, c.collect_until(h.is_complete_for(mid), 30), mid, sid) for c in streams]
        for rc in checks[1:]:
            self.assertEqual(rc.chunk_data, checks[0].chunk_data, "the pods streamed different replies")
        return checks[0], mid

    def turn(self, pod, sid, uid, msg, watchers=()):
        """SSE on `pod` (and on each of `watchers`), POST to pod, every stream checked, streams closed."""
        streams = self.open_streams((pod,) + tuple(watchers), sid, uid)
        try:
            return self.post_and_check(pod, sid, uid, msg, streams)
        finally:
            for c in streams:
                c.close()

    def test_health_is_distributed(self):
        for pod in self.cluster.pods:
            d = pod.health()
            self.assertEqual(d.get("mode"), "distributed", d)
            self.assertIs(d.get("db_connected"), True, d)

    def test_two_pods_one_session_reply_stored_exactly_once(self):
        a, b = self.cluster.pods
        sid, uid = h.new_id("s"), h.new_id("u")
        rc1, mid1 = self.turn(a, sid, uid, "two pods, one session: first", watchers=(b,))
        self.assert_stored_reply(self.db, mid1, sid, rc1.text, token_count=rc1.complete["token_count"])
        rc2, mid2 = self.turn(b, sid, uid, "two pods, one session: second", watchers=(a,))
        self.assertIn(earlier(2), rc2.text)
        self.assert_stored_reply(self.db, mid2, sid, rc2.text, token_count=rc2.complete["token_count"])
        # both pods finished both replies (so both wrote them); the rows are still the first writes
        for pod in (a, b):
            for mid in (mid1, mid2):
                infra.wait_until(lambda: "reply_finished message_id=%s" % mid in pod.log(400000), 30.0,
                                 msg="%s finished %s (else the test proves less than it should)" % (pod.pod_id, mid))
        rows = self.pg_messages(self.db, sid)
        self.assertEqual([(r["role"]) for r in rows], ["user", "assistant", "user", "assistant"],
                         [(r["role"], r["message_id"], r["content"][:30]) for r in rows])
        self.assertEqual([r["message_id"] for r in rows if r["role"] == "assistant"], [mid1, mid2])
        self.assertEqual([r["content"] for r in rows if r["role"] == "assistant"], [rc1.text, rc2.text])
        for pod in (a, b):
            self.assertNotIn("reply_store_failed", pod.log(400000), pod.pod_id)

    def test_two_pods_outage_reply_stored_once(self):
        # Both pods hold the reply when it completes during an outage; both queue the write; after the
        # restart both write it: the row exists exactly once.
        a, b = self.cluster.pods
        sid, uid = h.new_id("s"), h.new_id("u")
        streams = self.open_streams((a, b), sid, uid)
        long_msg = "outage with two pods " + " ".join("word%d" % i for i in range(300))  # ~2.5 s of reply
        acc = a.chat_ok(sid, uid, long_msg)
        mid = acc["message_id"]
        streams[0].collect_until(chunk_seen(mid, 1), 10)
        self.pg.stop(mode="fast")
        try:
            for c in streams:
                c.collect_until(h.is_complete_for(mid), 30)
            checks = [h.ReplyCheck(self, c.events, mid, sid) for c in streams]
            self.assertEqual(checks[0].text, checks[1].text)
            for pod in (a, b):
                infra.wait_until(lambda: pod.health().get("db_connected") is False, 10.0,
                                 msg="%s /health db_connected:false while PostgreSQL is down" % pod.pod_id)
                infra.wait_until(lambda: "store_write_deferred message_id=%s" % mid in pod.log(400000), 30.0,
                                 msg="%s queued the write of %s for after the outage" % (pod.pod_id, mid))
        finally:
            self.pg.start()
        for pod in (a, b):
            infra.wait_until(lambda: pod.health().get("db_connected") is True, 30.0,
                             msg="%s /health db_connected:true after the restart" % pod.pod_id)
        # both queued writes are carried out (the second finds the row and changes nothing)
        for pod in (a, b):
            infra.wait_until(lambda: "store_deferred_write_done message_id=%s" % mid in pod.log(400000), 30.0,
                             msg="%s wrote its queued reply after the restart" % pod.pod_id)
            self.assertNotIn("store_deferred_write_failed", pod.log(400000), pod.pod_id)
        self.assert_stored_reply(self.db, mid, sid, checks[0].text, token_count=checks[0].complete["token_count"])
        rows = self.pg_messages(self.db, sid)
        self.assertEqual(sorted(r["role"] for r in rows), ["assistant", "user"],
                         [(r["role"], r["message_id"]) for r in rows])
        for pod in (a, b):
            self.assertIn("reply_finished message_id=%s" % mid, pod.log(400000), "%s did not finish the reply" % pod.pod_id)

    def test_cancel_from_the_other_pod(self):
        # Devices on both pods; the reply was posted to pod-a and is cancelled through pod-b.
        a, b = self.cluster.pods
        sid, uid = h.new_id("s"), h.new_id("u")
        streams = self.open_streams((a, b), sid, uid)
        acc = a.chat_ok(sid, uid, "cancel me from the other pod " + " ".join("w%d" % i for i in range(300)))
        mid = acc["message_id"]
        streams[0].collect_until(chunk_seen(mid, 3), 10)
        r = b.request("POST", "/api/chat/%s/cancel?user_id=%s" % (mid, uid), body=b"", timeout=15.0)
        self.assertEqual(r.status, 202, "cancel through the other pod: %r" % r)
        seen = []
        for c in streams:
            c.collect_until(completed(mid), 15)
            evs = h.reply_events(c.events, mid)
            chunks = [e.json() for e in evs if e.event == "chunk"]
            self.assertEqual([x["chunk_id"] for x in chunks], list(range(len(chunks))))
            self.assertEqual([x["is_final"] for x in chunks], [False] * (len(chunks) - 1) + [True])
            self.assertEqual((chunks[-1].get("metadata") or {}).get("finish_reason"), "cancelled", chunks[-1])
            done = [e.json() for e in evs if e.event == "message_complete"]
            self.assertEqual([d.get("finish_reason") for d in done], ["cancelled"], done)
            seen.append("".join(x["chunk"] for x in chunks))
        self.assertEqual(seen[0], seen[1], "the devices saw different partial replies")
        self.assertNotIn("w299", seen[0], "the reply was not cut short")
        row = self.wait_pg_message(self.db, mid, status="cancelled")
        self.assertEqual(row["content"], seen[0], "stored partial text differs from the streamed one")
        for pod in (a, b):
            infra.wait_until(lambda: "reply_finished message_id=%s" % mid in pod.log(400000), 30.0,
                             msg="%s finished %s" % (pod.pod_id, mid))
        self.assertEqual(self.wait_pg_message(self.db, mid, status="cancelled")["content"], seen[0])
        r = b.request("POST", "/api/chat/%s/cancel?user_id=%s" % (mid, uid), body=b"", timeout=15.0)
        self.assertEqual((r.status, r.json().get("status")), (202, "cancelling"),
                         "repeated cancel after the end, from the other pod: the same answer: %r" % r)

    def test_workflow_request_carries_conversation_history(self):
        a, b = self.cluster.pods
        sid, uid = h.new_id("s"), h.new_id("u")
        nc = self.track(self.cluster.nats_client("history-spy"))
        sub = nc.subscribe("chat.workflow.execute.%s" % sid)
        nc.flush()
        streams = self.open_streams((a, b), sid, uid)  # one device on each pod for the whole conversation
        msgs = ["history over NATS: one", "history over NATS: two", "history over NATS: three"]
        replies, mids = [], []
        for i, (pod, m) in enumerate(zip((a, b, a), msgs)):
            rc, mid = self.post_and_check(pod, sid, uid, m, streams)
            self.assert_stored_reply(self.db, mid, sid, rc.text)
            replies.append(rc.text)
            mids.append(mid)
            self.assertIn(FIRST_TURN if i == 0 else earlier(2 * i), rc.text)
        reqs = []
        for _ in msgs:
            try:
                reqs.append(sub.next(5.0).json())
            except Exception as e:  # noqa: BLE001
                self.fail("WorkflowRequest not seen on NATS: %r (have %d)" % (e, len(reqs)))
        self.assertEqual([r.get("message_id") for r in reqs], mids, "requests on chat.workflow.execute.%s" % sid)
        expected_history = []
        for i, req in enumerate(reqs):
            self.assertEqual((req.get("session_id"), req.get("user_id"), req.get("message")), (sid, uid, msgs[i]), req)
            hist = (req.get("context") or {}).get("conversation_history") or []
            got = [{"role": e.get("role"), "content": e.get("content")} for e in hist]
            self.assertEqual(got, expected_history, "conversation_history of turn %d" % (i + 1))
            expected_history = expected_history + [{"role": "user", "content": msgs[i]},
                                                   {"role": "assistant", "content": replies[i]}]

    def test_client_moves_to_another_pod_between_turns(self):
        # Turn 1 watched on pod-a only; the device then reconnects to pod-b (the registry lists only
        # pod-b) and posts turn 2 there at once: its stream on pod-b must get the reply.
        a, b = self.cluster.pods
        sid, uid = h.new_id("s"), h.new_id("u")
        rc1, mid1 = self.turn(a, sid, uid, "moving between pods: one")
        self.assert_stored_reply(self.db, mid1, sid, rc1.text)
        (c,) = self.open_streams((b,), sid, uid)
        acc = b.chat_ok(sid, uid, "moving between pods: two")
        mid2 = acc["message_id"]
        try:
            evs = c.collect_until(h.is_complete_for(mid2), 15)
        except AssertionError as e:
            stored = self.pg_message(self.db, mid2)
            self.fail("the stream on pod-b (the only pod in the registry) got no reply to %s within 15 s (%s); "
                      "the reply was stored meanwhile: %s; pods that finished it: %s"
                      % (mid2, e, bool(stored),
                         [p.pod_id for p in (a, b) if "reply_finished message_id=%s" % mid2 in p.log(400000)]))
        rc2 = h.ReplyCheck(self, evs, mid2, sid)
        self.assertIn(earlier(2), rc2.text)
        self.assert_stored_reply(self.db, mid2, sid, rc2.text)

    def test_reply_stored_without_any_client(self):
        a, b = self.cluster.pods
        msg = "Nobody watches this distributed reply: lime-3390."
        ref, _ = self.turn(b, h.new_id("ref"), h.new_id("u"), msg)
        sid, uid = h.new_id("s"), h.new_id("u")
        acc = a.chat_ok(sid, uid, msg)
        self.assert_stored_reply(self.db, acc["message_id"], sid, ref.text, token_count=ref.complete["token_count"])

    def test_reply_stored_when_client_left_before_first_chunk(self):
        a, b = self.cluster.pods
        msg = "The watcher leaves before the first chunk: pear-8830."
        ref, _ = self.turn(a, h.new_id("ref"), h.new_id("u"), msg)
        sid, uid = h.new_id("s"), h.new_id("u")
        (c,) = self.open_streams((b,), sid, uid)
        c.close()
        self.wait_registry(sid, set())  # the client left
        acc = a.chat_ok(sid, uid, msg)
        self.assert_stored_reply(self.db, acc["message_id"], sid, ref.text, token_count=ref.complete["token_count"])


def crafted_chunks(session_id, message_id, words, model, finish_reason="stop"):
    """ResponseChunks of one reply as a worker would publish them (the last one final, with metadata)."""
    out = []
    for i, w in enumerate(words):
        ch = {"session_id": session_id, "message_id": message_id, "chunk_id": i, "chunk": w,
              "chunk_type": "content", "is_final": i == len(words) - 1,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "correlation_id": "corr_fww"}
        if ch["is_final"]:
            ch["metadata"] = {"model": model, "tokens_used": len(words), "finish_reason": finish_reason}
        out.append(ch)
    return out


class FirstWriteWinsTest(PgMixin, infra.ClusterTestCase):
    """docs/API.md#database: every pod that saw a reply may write it, the first write wins. message_id is the primary
    key, so counting rows proves nothing: here two pods get *different* chunks for the same message_id (crafted on
    NATS, no worker), and the stored row must stay the first finished one after the second pod wrote too."""

    @classmethod
    def setUpClass(cls):
        cls.pg = pg_infra.PostgresServer(name="pg-fww")
        try:
            cls.pg.start()
        except BaseException:
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def test_second_pods_different_reply_does_not_replace_the_first(self):
        db = self.pg.create_database()
        cl = self.new_cluster(pods=2, workers=0, pod_env=self.pg.chatd_env(db))
        a, b = cl.pod("pod-a"), cl.pod("pod-b")
        nc = self.track(cl.nats_client("fake-worker"))
        reqs = nc.subscribe("chat.workflow.execute.*", queue_group="workflow-workers")
        nc.flush()
        sid, uid = h.new_id("s"), h.new_id("u")
        ca, _ = self.open_sse(a, sid, uid)
        cb, _ = self.open_sse(b, sid, uid)
        acc = a.chat_ok(sid, uid, "which version is kept?")
        mid = reqs.next(10.0).json()["message_id"]
        self.assertEqual(mid, acc["message_id"])
        first = crafted_chunks(sid, mid, ["the ", "first ", "finished ", "version"], "model-a")
        second = crafted_chunks(sid, mid, ["a ", "different ", "later ", "one"], "model-b", finish_reason="cancelled")

        # pod-a finishes first and stores its version
        for ch in first:
            nc.publish("chat.pod.pod-a.response", ch)
        nc.flush()
        rc_a = h.ReplyCheck(self, ca.collect_until(h.is_complete_for(mid), 30), mid, sid)
        self.assertEqual(rc_a.text, "the first finished version")
        row = self.wait_pg_message(db, mid, status="complete")
        self.assertEqual(row["content"], "the first finished version", row)

        # then pod-b finishes a different version of the same message and writes it too
        for ch in second:
            nc.publish("chat.pod.pod-b.response", ch)
        nc.flush()
        evs = cb.collect_until(lambda e: e.event == "message_complete" and e.json().get("message_id") == mid, 30)
        text_b = "".join(e.json()["chunk"] for e in h.reply_events(evs, mid) if e.event == "chunk")
        self.assertEqual(text_b, "a different later one", "pod-b streamed what it got")
        infra.wait_until(lambda: "reply_finished message_id=%s" % mid in b.log(400000), 30.0,
                         msg="pod-b finished %s" % mid)
        # SIGTERM flushes pod-b's store before it exits: its write has been executed (and succeeded: an
        # insert-if-absent that finds the row is not an error) once the process is gone
        self.assertEqual(b.stop(timeout=60.0), 0, "pod-b exit code after SIGTERM")
        log_b = b.log(400000)
        self.assertIn("replies_stored=1", [l for l in log_b.splitlines() if "chatd_stopped" in l][-1],
                      "pod-b did not complete its write of %s" % mid)
        self.assertNotIn("reply_store_failed", log_b)

        row = self.wait_pg_message(db, mid, status="complete")
        self.assertEqual(row["content"], "the first finished version", "the second pod's write replaced the first")
        self.assertEqual(row["token_count"], len(first), row)
        md = row["metadata"]
        self.assertEqual((md.get("model"), md.get("finish_reason"), md.get("pod_id")), ("model-a", "stop", "pod-a"), md)
        n = self.pg.scalar(db, "SELECT count(*) FROM messages WHERE session_id = :'sid'", sid=sid)
        self.assertEqual(n, 2, "the user message and one reply")


class PodsStartTogetherTest(PgMixin, infra.ClusterTestCase):
    """Three pods started at the same moment against an empty database: migrations are safe."""

    @classmethod
    def setUpClass(cls):
        cls.pg = pg_infra.PostgresServer(name="pg-start")
        try:
            cls.pg.start()
            cls.cluster = infra.Cluster(pods=0, workers=1, worker_env={"WORKER_DEMO_CHUNK_DELAY": "5ms"})
            cls.cluster.start()
        except BaseException:
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.cluster is not None:
                cls.cluster.cleanup()
        finally:
            cls.pg.cleanup()

    def test_three_pods_start_at_once_on_an_empty_database(self):
        for rnd in range(3):
            db = self.pg.create_database()
            pods = [self.cluster.add_pod("r%d-%s-pod-%d" % (rnd, h.new_id("p")[2:8], i), env=self.pg.chatd_env(db),
                                         start=False) for i in range(3)]
            for p in pods:
                p.spawn()
            for p in pods:
                try:
                    p.wait_healthy(40.0)
                except h.StartError as e:
                    self.fail("round %d: %s did not come up with its peers on an empty database: %s"
                              % (rnd, p.pod_id, e))
            for p in pods:
                self.cluster.wait_pod_ready(p)
                d = p.health()
                self.assertIs(d.get("db_connected"), True, d)
                self.assertEqual(d.get("mode"), "distributed", d)
            versions = self.pg.query(db, "SELECT version FROM schema_migrations ORDER BY version")
            vs = [v["version"] for v in versions]
            self.assertTrue(vs, "no migrations recorded")
            self.assertEqual(vs, sorted(set(vs)), vs)
            applied = sum(p.log(400000).count("store_migration_applied") for p in pods)
            self.assertEqual(applied, len(vs), "migrations applied %d times for %d versions" % (applied, len(vs)))
            for p in pods:
                sid, uid = h.new_id("s"), h.new_id("u")
                c, _ = self.open_sse(p, sid, uid)
                acc = p.chat_ok(sid, uid, "hello from %s" % p.pod_id)
                rc = h.ReplyCheck(self, c.collect_until(h.is_complete_for(acc["message_id"]), 30),
                                  acc["message_id"], sid)
                c.close()
                self.assert_stored_reply(db, acc["message_id"], sid, rc.text)
            for p in pods:
                code = p.stop(timeout=20.0)
                self.assertEqual(code, 0, "%s exit code after SIGTERM" % p.pod_id)


if __name__ == "__main__":
    unittest.main()
