"""Process lifecycle: start-up, configuration errors, SIGTERM, restart on the same database."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            raise AssertionError("%s: not within %.0fs" % (what, timeout))
        time.sleep(0.05)


def port_accepts(port):
    try:
        socket.create_connection((h.HOST, port), timeout=2).close()
        return True
    except OSError:
        return False


class LifecycleTest(h.ChatdTestCase):
    """Every test starts its own server(s)."""

    def sigterm_and_time(self, srv, timeout=15.0):
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            srv.kill()
            self.fail("chatd did not exit within %.0fs of SIGTERM (SIGKILLed)" % timeout)
        return srv.proc.returncode, time.monotonic() - t0

    def test_sigterm_idle_exits_zero(self):
        srv = self.new_server("term-idle")
        code, secs = self.sigterm_and_time(srv)
        self.assertEqual(code, 0, "exit code after SIGTERM")
        self.assertLess(secs, 10.0)
        with self.assertRaises(OSError):
            socket.create_connection((h.HOST, srv.port), timeout=2).close()

    def test_sigterm_with_open_streams(self):
        srv = self.new_server("term-streams", env={"SSE_HEARTBEAT_INTERVAL": "1s"})
        uid = h.new_id("u")
        clients = [self.open_sse(srv, h.new_id("s"), uid)[0] for _ in range(3)]
        same = self.open_sse(srv, clients[0].path.split("session_id=")[1].split("&")[0], uid)[0]
        clients.append(same)
        # every stream is attached to its session (not just answered) before the signal
        wait_until(lambda: srv.health()["active_connections"] == 4, 15.0, "four streams attached")
        code, secs = self.sigterm_and_time(srv)
        self.assertEqual(code, 0, "exit code after SIGTERM with open SSE streams")
        self.assertLess(secs, 10.0, "took %.1fs to exit with open SSE streams" % secs)
        for i, c in enumerate(clients):
            ended = c.wait_closed(5.0)
            self.assertTrue(ended, "SSE stream %d did not end after the server exited" % i)
            self.assertTrue(c.retries, "stream %d: no retry: hint before close (events %r)" % (i, c.events[-5:]))
            bad = [e for e in c.events if e.event not in ("connected", "ping", "reset", "error")]
            self.assertEqual(bad, [], "unexpected events on idle streams: %r" % bad)

    def test_sigterm_during_reply_finishes_and_stores_it(self):
        # SERVER_SHUTDOWN_TIMEOUT is how long SIGTERM waits for running replies; ~135 chunks at 40 ms make
        # a reply of ~5 s, so the pod is draining for that long after the signal.
        srv = self.new_server("term-reply", env={"WORKER_DEMO_CHUNK_DELAY": "40ms", "SERVER_SHUTDOWN_TIMEOUT": "60s"})
        sid, uid = h.new_id("s"), h.new_id("u")
        c, _ = self.open_sse(srv, sid, uid)
        # The listener closes at SIGTERM: only connections opened before it can see the draining pod.
        conns = {name: h.HttpConn(srv.port) for name in ("health", "ready", "chat")}
        try:
            for conn in conns.values():
                self.assertEqual(conn.request("GET", "/health").status, 200)
            acc = srv.chat_ok(sid, uid, " ".join("t%d" % i for i in range(300)))
            mid = acc["message_id"]
            c.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 2, 10)
            srv.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            # /health turns 503 "draining" as soon as the pod handled the signal (the reply still runs)
            deadline = time.monotonic() + 15.0
            while True:
                r = conns["health"].request("GET", "/health")
                if r.status != 200:
                    break
                self.assertLess(time.monotonic(), deadline, "/health still 200 15 s after SIGTERM")
                time.sleep(0.02)
            self.assertEqual(r.status, 503, "/health while draining (docs/API.md#health: 503 \"draining\"): %r" % r)
            self.assertEqual(r.json().get("status"), "draining", r)
            self.assertIsNone(srv.proc.poll(), "chatd exited although a reply was still streaming")
            r = conns["ready"].request("GET", "/ready")
            self.assertEqual(r.status, 503, "/ready while draining: %r" % r)
            self.assertIs(r.json().get("ready"), False, r)
            r = conns["chat"].request("POST", "/api/chat", json.dumps({"session_id": h.new_id("s"), "user_id": uid,
                                                                       "message": "too late"}),
                                      {"Content-Type": "application/json"})
            self.assertError(r, 503, "unavailable", "POST /api/chat while draining")
            self.assertTrue(r.header("retry-after"), "503 without Retry-After: %r" % r.headers)
            # and nobody new gets in: the listener is closed
            wait_until(lambda: not port_accepts(srv.port), 10.0, "the listener closed after SIGTERM")
        finally:
            for conn in conns.values():
                conn.close()
        try:
            srv.proc.wait(60)
        except subprocess.TimeoutExpired:
            srv.kill()
            self.fail("chatd did not exit within 60 s of SIGTERM with a ~5 s reply running")
        secs = time.monotonic() - t0
        self.assertEqual(srv.proc.returncode, 0)
        self.assertNotIn("shutdown_timeout", srv.log(), "the drain ran into SERVER_SHUTDOWN_TIMEOUT after %.1fs" % secs)
        # the stream got the whole reply, then a retry hint, then its end
        self.assertTrue(c.wait_closed(10), "the stream did not end after chatd exited")
        mine = h.reply_events(c.events, mid)
        self.assertTrue([e for e in mine if e.event == "message_complete"],
                        "the stream ended without message_complete for the running reply (got %d chunks)" % len(mine))
        rc = h.ReplyCheck(self, c.events, mid, sid)
        self.assertIn("t299", rc.text)
        done_at = c.events.index(mine[-1])
        self.assertTrue([i for i, _ in c.retries if i > done_at], "no retry: hint after the reply: %r" % c.retries)
        rows = srv.wait_message_row(mid, "complete")
        self.assertEqual(rows[0]["content"], rc.text)

    def test_sigterm_past_the_shutdown_timeout_stores_the_reply_cut_short(self):
        # Embedded, the worker runs inside chatd: a reply still running when SERVER_SHUTDOWN_TIMEOUT ends
        # dies with it. Its stream sees it end, and the store keeps what it had, incomplete.
        srv = self.new_server("term-cut", env={"WORKER_DEMO_CHUNK_DELAY": "100ms", "SERVER_SHUTDOWN_TIMEOUT": "1s"})
        sid, uid = h.new_id("s"), h.new_id("u")
        c, _ = self.open_sse(srv, sid, uid)
        mid = srv.chat_ok(sid, uid, " ".join("t%d" % i for i in range(300)))["message_id"]
        c.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 2, 10)
        code, _ = self.sigterm_and_time(srv)
        self.assertEqual(code, 0, "exit code after SIGTERM")
        self.assertIn("replies_cut_by_shutdown", srv.log())
        self.assertTrue(c.wait_closed(10), "the stream did not end after chatd exited")
        mine = h.reply_events(c.events, mid)
        errors = [e.json() for e in mine if e.event == "error"]
        self.assertEqual([e.get("code") for e in errors], ["shutdown"], "error events of the cut reply: %r" % errors)
        completes = [e.json() for e in mine if e.event == "message_complete"]
        self.assertEqual([e.get("status") for e in completes], ["incomplete"], completes)
        self.assertEqual(mine[-1].event, "message_complete", "events after the reply's end: %r" % mine[-3:])
        shown = "".join(e.json()["chunk"] for e in mine if e.event == "chunk")
        self.assertTrue(shown, "no chunk text before the cut")
        self.assertNotIn("t299", shown, "the reply finished before the timeout: nothing was cut")
        rows = srv.db_query("SELECT status, content, metadata FROM messages WHERE message_id = ?", (mid,))
        self.assertEqual(len(rows), 1, "the cut reply was not stored")
        self.assertEqual(rows[0]["status"], "incomplete", rows[0])
        self.assertEqual(rows[0]["content"], shown, "stored text differs from what the stream showed")
        self.assertEqual(json.loads(rows[0]["metadata"]).get("error_code"), "shutdown", rows[0])

    def test_restart_on_same_database(self):
        srv = self.new_server("restart-1", env={"WORKER_DEMO_CHUNK_DELAY": "0"})
        sid, owner = h.new_id("s"), h.new_id("u")
        acc = srv.chat_ok(sid, owner, "remember me")
        srv.wait_message_row(acc["message_id"], "complete")
        self.assertEqual(srv.stop(), 0)
        srv2 = self.new_server("restart-2", env={"WORKER_DEMO_CHUNK_DELAY": "0"}, db_path=srv.db_path)
        # migrations are idempotent: the second start works and the data is still there
        rows = srv2.db_query("SELECT role, content FROM messages WHERE session_id=?", (sid,))
        self.assertEqual(sorted(r["role"] for r in rows), ["assistant", "user"], rows)
        self.assertEqual(srv2.chat(sid, h.new_id("intruder"), "hijack").status, 403,
                         "session ownership lost across a restart")
        rc, acc2, _ = self.run_reply(srv2, sid, owner, "back again")
        self.assertIn("back again", rc.text)
        self.assertEqual(srv2.stop(), 0)

    def test_bad_config_is_a_clear_error(self):
        for name, value in (("SERVER_PORT", "notaport"), ("SSE_HEARTBEAT_INTERVAL", "soon"),
                            ("WORKER_DEMO_WORDS_PER_CHUNK", "0"), ("POD_ID", "bad.pod")):
            with self.subTest(setting=name):
                srv = self.new_server("badcfg", env={name: value}, start=False)
                srv.spawn()
                try:
                    srv.proc.wait(10)
                except subprocess.TimeoutExpired:
                    srv.kill()
                    self.fail("chatd started with %s=%r instead of refusing" % (name, value))
                self.assertNotEqual(srv.proc.returncode, 0, "%s=%r: exit code 0" % (name, value))
                self.assertIn(name, srv.log(), "%s=%r: the error does not name the setting" % (name, value))

    def test_help_lists_settings(self):
        p = subprocess.run([h.chatd_bin(), "--help"], capture_output=True, timeout=10,
                           env={k: v for k, v in os.environ.items() if not k.startswith(("SERVER_", "DB_"))})
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        for name in ("SERVER_PORT", "DB_PATH", "SSE_HEARTBEAT_INTERVAL", "WORKER_DEMO_CHUNK_DELAY"):
            self.assertIn(name, out)

    def test_port_in_use_fails_fast(self):
        s = socket.socket()
        s.bind((h.HOST, 0))
        s.listen(1)
        try:
            srv = self.new_server("port-busy", start=False)
            srv.spawn(port=s.getsockname()[1])
            try:
                srv.proc.wait(10)
            except subprocess.TimeoutExpired:
                srv.kill()
                self.fail("chatd kept running although its port was taken")
            self.assertNotEqual(srv.proc.returncode, 0)
        finally:
            s.close()


class StalledLogOutputTest(unittest.TestCase):
    """chatd's stdout is a pipe nobody reads (a log collector that stalled): serving must go on. Lines are written
    by a thread of their own from a bounded queue; when it is full the oldest go, counted in
    chat_log_lines_dropped_total and said in a log_lines_dropped line once the output moves again."""

    class PipedChatd(h.ChatdServer):
        def spawn(self, port=None):
            self.port = port or h.free_port()
            self.proc = subprocess.Popen([h.chatd_bin()], env=self.build_env(self.port), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmpdir)
            return self

    def setUp(self):
        self.srv = self.PipedChatd(name="stalled-log").start()
        self.addCleanup(self.srv.cleanup)

    def test_a_stdout_nobody_reads_stalls_nothing(self):
        # Each refused chat logs a line of ~150 bytes: 6,000 are far more than the pipe (64 KiB) and the queue hold.
        conn = h.HttpConn(self.srv.port)
        try:
            for i in range(6000):
                r = conn.request("POST", "/api/chat", json.dumps({"user_id": "u1", "message": "no session %d" % i}),
                                 {"Content-Type": "application/json"})
                self.assertEqual(r.status, 400, "request %d: %s %r" % (i, r.status, r.body[:200]))
        finally:
            conn.close()
        self.assertEqual(self.srv.get("/health", timeout=5).status, 200)
        dropped = [line for line in self.srv.get("/metrics", timeout=5).body.decode().splitlines()
                   if line.startswith("chat_log_lines_dropped_total ")]
        self.assertEqual(len(dropped), 1, dropped)
        self.assertGreater(float(dropped[0].split()[1]), 0, "nothing dropped: did the pipe ever fill?")

        # The collector catches up: what it reads now says how many lines it missed.
        out = []
        reader = threading.Thread(target=lambda: out.append(self.srv.proc.stdout.read()), daemon=True)
        reader.start()
        time.sleep(0.5)
        r = self.srv.post_json("/api/chat", {"user_id": "u1", "message": "one more refused"})
        self.assertEqual(r.status, 400)
        self.srv.stop()
        reader.join(10)
        text = out[0].decode("utf-8", "replace") if out else ""
        reports = [line for line in text.splitlines() if "log_lines_dropped" in line]
        self.assertEqual(len(reports), 1, "said once, when the output moved again: %r" % reports[:5])
        self.assertIn("chat_rejected", text.split("log_lines_dropped")[-1], "lines after the drop report")

    def test_a_stdout_whose_reader_went_away_costs_lines_not_the_process(self):
        # The collector exited (a closed pipe): a write to it must fail, not end chatd with SIGPIPE.
        self.srv.proc.stdout.close()
        for i in range(20):
            r = self.srv.post_json("/api/chat", {"user_id": "u1", "message": "no session %d" % i})
            self.assertEqual(r.status, 400)
        time.sleep(0.5)  # the log thread writes them
        self.assertIsNone(self.srv.proc.poll(), "chatd ended with %s" % self.srv.proc.returncode)
        self.assertEqual(self.srv.get("/health", timeout=5).status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
