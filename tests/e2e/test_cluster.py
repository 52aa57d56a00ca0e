"""scripts/cluster.sh end to end: `up` on the default ports, chats through nginx on :80, `down`
leaves nothing running and says what it waits for; an `up` whose initdb fails says so, shows the
end of initdb's log and stops what it had started.

The full cluster uses fixed ports (nginx 80, pods 8081..8083, NATS 4222, Redis 6379, PostgreSQL
5432). If one of them is busy the test FAILS (it does not skip): the reference layout must be
runnable. The failure test moves the cluster to free ports.

Run (from tests/e2e): CHATD_BIN=../../build/chatd python3 -m unittest -v test_cluster
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import harness
from harness import ReplyCheck, SSEClient, http_request, is_complete_for, new_id
from infra import demo_reply, port_open, wait_until, worker_bin

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "cluster.sh")
HTTP_PORT = 80
POD_PORTS = (8081, 8082, 8083)
NATS_PORT, REDIS_PORT, PG_PORT = 4222, 6379, 5432
ALL_PORTS = (HTTP_PORT,) + POD_PORTS + (NATS_PORT, REDIS_PORT, PG_PORT)
SERVER_NAMES = ("nats-server", "redis-server", "nginx", "postgres", "chatd", "chat-worker")


def port_holder(port):
    """Best-effort description of who listens on port (ss -ltnp)."""
    ss = shutil.which("ss")
    if not ss:
        return ""
    try:
        out = subprocess.run([ss, "-Hltnp", "sport = :%d" % port], capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def proc_start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19], fields[0]  # starttime, state
    except (OSError, IndexError):
        return None


def proc_alive(pid, start):
    st = proc_start_time(pid)
    return st is not None and st[0] == start and st[1] not in ("Z", "X")


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children_map():
    kids = {}
    for pid in all_pids():
        try:
            with open("/proc/%d/stat" % pid) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(pid)
    return kids


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def procs_mentioning(path):
    """Server processes whose command line mentions path: [(pid, cmdline)]."""
    out = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        cl = cmdline(pid)
        if path in cl and any(n in cl for n in SERVER_NAMES):
            out.append((pid, cl))
    return out


def free_port_run(count):
    """The first of `count` consecutive free ports on 127.0.0.1."""
    for _ in range(100):
        base = harness.free_port()
        if base + count < 65536 and not any(port_open(p) for p in range(base, base + count)):
            return base
    raise RuntimeError("no %d consecutive free ports" % count)


class ClusterScriptCase(unittest.TestCase):
    """A run directory of its own and, at the end, `down` and a sweep of whatever is left."""
    maxDiff = 4000

    def setUp(self):
        self.run_dir = tempfile.mkdtemp(prefix="chatd-e2e-cluster-sh-")
        self.tracked = {}       # pid -> (start time, label)
        self.down_done = False
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(harness._SCRUB_PREFIXES)}
        self.env.update({"CLUSTER_DIR": self.run_dir,
                         "BUILD": os.path.dirname(os.path.abspath(harness.chatd_bin()))})
        for k in list(self.env):
            if k.startswith("CLUSTER_") and k != "CLUSTER_DIR":
                del self.env[k]  # default layout only

    def tearDown(self):
        try:
            if not self.down_done:
                self.script("down", timeout=120, check=False)
        finally:
            self.collect_pids()
            for pid, (start, _) in self.tracked.items():
                if proc_alive(pid, start):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            for pid, _ in procs_mentioning(self.run_dir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if os.environ.get("E2E_KEEP_LOGS") != "1":
                shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------
    def script(self, cmd, timeout, check=True):
        try:
            r = subprocess.run([SCRIPT, cmd], env=self.env, cwd=ROOT, capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            if check:
                self.fail("scripts/cluster.sh %s did not finish within %ds; output:\n%s\n%s%s"
                          % (cmd, timeout, e.stdout, e.stderr, self.logs()))
            return None
        if check and r.returncode != 0:
            self.fail("scripts/cluster.sh %s exited %d\nstdout:\n%s\nstderr:\n%s%s"
                      % (cmd, r.returncode, r.stdout, r.stderr, self.logs()))
        return r

    def logs(self, tail=3000):
        out = []
        d = os.path.join(self.run_dir, "logs")
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                try:
                    with open(os.path.join(d, name), "rb") as f:
                        data = f.read()[-tail:].decode(errors="replace")
                except OSError:
                    continue
                out.append("\n----- %s -----\n%s" % (name, data))
        return "".join(out)

    def collect_pids(self):
        """Adds the pids named in the run dir (and their descendants) to self.tracked."""
        pids = {}
        if os.path.isdir(self.run_dir):
            for name in os.listdir(self.run_dir):
                if name.endswith(".pid"):
                    try:
                        with open(os.path.join(self.run_dir, name)) as f:
                            pids[int(f.read().split()[0])] = name[:-4]
                    except (OSError, ValueError, IndexError):
                        pass
            try:
                with open(os.path.join(self.run_dir, "pg", "postmaster.pid")) as f:
                    pids[int(f.readline().strip())] = "postgres"
            except (OSError, ValueError):
                pass
        for pid, cl in procs_mentioning(self.run_dir):
            pids.setdefault(pid, cl[:60])
        kids = children_map()
        todo = list(pids.items())
        while todo:
            pid, label = todo.pop()
            st = proc_start_time(pid)
            if st is None or pid in self.tracked:
                continue
            self.tracked[pid] = (st[0], label)
            for k in kids.get(pid, []):
                todo.append((k, "%s child" % label))



class ClusterScriptTest(ClusterScriptCase):
    def test_up_chat_down(self):
        busy = [p for p in ALL_PORTS if port_open(p)]
        if busy:
            self.fail("the reference cluster needs ports %s, but %s %s busy; stop what holds them:\n%s"
                      % (", ".join(map(str, ALL_PORTS)), ", ".join(map(str, busy)),
                         "is" if len(busy) == 1 else "are",
                         "\n".join(port_holder(p) or "port %d: holder unknown" % p for p in busy)))
        for b in (harness.chatd_bin(), worker_bin()):
            self.assertTrue(os.access(b, os.X_OK), "binary %s missing" % b)

        # The chat rate alone decides below (replies running at once would refuse too).
        self.env["CLUSTER_POD_ENV"] = "RATE_LIMIT_RUNNING_REPLIES=0"
        t0 = time.monotonic()
        self.script("up", timeout=240)
        up_seconds = time.monotonic() - t0
        self.collect_pids()
        labels = {label for _, label in self.tracked.values()}
        for name in ("nats", "redis", "pod-1", "pod-2", "pod-3", "worker-1", "worker-2", "nginx", "postgres"):
            self.assertIn(name, labels, "no running process for %s after up (tracked: %r)" % (name, sorted(labels)))

        # every pod: healthy, distributed, all dependencies connected
        for i, port in enumerate(POD_PORTS, 1):
            r = http_request(port, "GET", "/health", timeout=5)
            self.assertEqual(r.status, 200, "pod-%d /health: %r" % (i, r))
            h = r.json()
            self.assertEqual(h.get("mode"), "distributed", "pod-%d /health %r" % (i, h))
            self.assertEqual(h.get("pod_id"), "pod-%d" % i, h)
            for k in ("nats_connected", "redis_connected", "db_connected"):
                self.assertIs(h.get(k), True, "pod-%d %s: %r" % (i, k, h))
            self.assertEqual(http_request(port, "GET", "/ready", timeout=5).status, 200, "pod-%d /ready" % i)
        r = http_request(HTTP_PORT, "GET", "/health", timeout=5)
        self.assertEqual(r.status, 200, "/health through nginx: %r" % r)
        # HTTP/1.0 without Host (old load balancers' checks): nginx still names a host to the pod,
        # which refuses an HTTP/1.1 request without one
        with socket.create_connection((harness.HOST, HTTP_PORT), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200"), answer[:200])
        wait_until(lambda: all(port_open(p) for p in ALL_PORTS), 5, msg="every cluster port listening")

        # chats through nginx: SSE and POST both via :80 (least_conn may pick different pods)
        uid = new_id("u")
        pods_seen = set()
        for n in range(3):
            sid = new_id("s")
            q = urllib.parse.urlencode({"session_id": sid, "user_id": uid})
            c = SSEClient(HTTP_PORT, "/api/sse?" + q)
            try:
                conn = c.connected(timeout=10)
                pods_seen.add(conn.get("pod_id"))
                self.assertIn("text/event-stream", c.header("content-type") or "")
                msg = "hello through the load balancer %d" % n
                r = http_request(HTTP_PORT, "POST", "/api/chat",
                                 json.dumps({"session_id": sid, "user_id": uid, "message": msg}),
                                 {"Content-Type": "application/json"}, timeout=10)
                self.assertEqual(r.status, 202, "POST /api/chat via :80: %r" % r)
                mid = r.json()["message_id"]
                evs = c.collect_until(is_complete_for(mid), 30)
                rc = ReplyCheck(self, evs, mid, sid)
                self.assertEqual(rc.text, demo_reply(msg))
                # not buffered by the proxy: the ~25 chunks (40 ms apart) arrive spread over the reply
                spread = rc.chunks[-1].received_at - rc.chunks[0].received_at
                self.assertGreater(spread, 0.4, "chunks arrived in one burst (proxy buffering?): %.2fs" % spread)
            finally:
                c.close()
            # stored once in PostgreSQL, visible through any pod
            path = "/api/sessions/%s/messages?%s" % (sid, urllib.parse.urlencode({"user_id": uid}))

            def stored():
                r = http_request(HTTP_PORT, "GET", path, timeout=5)
                if r.status != 200:
                    return None
                ms = r.json().get("messages") or []
                return ms if [m.get("message_id") for m in ms].count(mid) == 1 else None
            ms = wait_until(stored, 10, msg="assistant message %s stored once" % mid)
            self.assertEqual([m.get("role") for m in ms], ["user", "assistant"], ms)
            self.assertEqual(ms[1].get("content"), rc.text)
            self.assertEqual(ms[1].get("status"), "complete", ms[1])

        self.check_rate_is_held_across_pods()
        self.check_a_deleted_session_ends_on_every_pod()

        # NATS ran with the role permissions of deploy/nats/nats.conf, and refused nothing the
        # pods and workers did; the role passwords are readable only by the cluster's owner
        with open(os.path.join(self.run_dir, "logs", "nats.log"), errors="replace") as f:
            nats_log = f.read()
        self.assertIn("nats.conf", nats_log, "nats-server did not load deploy/nats/nats.conf")
        self.assertEqual([line for line in nats_log.splitlines() if "Violation" in line], [],
                         "nats-server refused a pod or a worker")
        self.assertEqual(os.stat(os.path.join(self.run_dir, "secrets.env")).st_mode & 0o077, 0)

        # down: everything it started is gone
        self.collect_pids()
        t0 = time.monotonic()
        down = self.script("down", timeout=180)
        self.down_done = True
        down_seconds = time.monotonic() - t0
        deadline = time.monotonic() + 10
        left = None
        while time.monotonic() < deadline:
            left = [(pid, label, cmdline(pid)) for pid, (start, label) in self.tracked.items()
                    if proc_alive(pid, start)]
            left += [(pid, "mentions run dir", cl) for pid, cl in procs_mentioning(self.run_dir)
                     if pid not in self.tracked]
            if not left:
                break
            time.sleep(0.2)
        self.assertEqual(left, [], "processes still running after `cluster.sh down`")
        busy = [p for p in ALL_PORTS if port_open(p)]
        self.assertEqual(busy, [], "ports still listening after down: %s" %
                         "\n".join(port_holder(p) for p in busy))
        leftovers = [n for n in os.listdir(self.run_dir) if n.endswith(".pid") or n == "cluster.env"]
        self.assertEqual(leftovers, [], "pid files / cluster.env left in the run dir")
        for name in ("nginx", "pod-1", "pod-3", "worker-2", "postgres", "redis", "nats"):
            self.assertIn("stopping %s" % name, down.stderr, "down does not say what it stops")
        print("\ncluster.sh: up %.1fs, down %.1fs, pods used through nginx: %s"
              % (up_seconds, down_seconds, sorted(pods_seen)))


    def check_rate_is_held_across_pods(self):
        """One user posting fast through nginx: the pods share one bucket in Redis, so the
        default burst (RATE_LIMIT_CHAT_BURST=10) holds for all of them together."""
        before = [pod_metrics(port) for port in POD_PORTS]
        uid, sid = new_id("u"), new_id("s")
        statuses, refused = [], None
        for n in range(24):
            r = http_request(HTTP_PORT, "POST", "/api/chat",
                             json.dumps({"session_id": sid, "user_id": uid, "message": "flood %d" % n}),
                             {"Content-Type": "application/json"}, timeout=10)
            statuses.append(r.status)
            if r.status == 429 and refused is None:
                refused = r
        after = [pod_metrics(port) for port in POD_PORTS]
        accepted = statuses.count(202)
        self.assertEqual(accepted + statuses.count(429), len(statuses), statuses)
        # 10 at once, and one more for each 2 s the loop took (30 a minute).
        self.assertGreaterEqual(accepted, 10, statuses)
        self.assertLessEqual(accepted, 12, "each pod let the burst through on its own: %s" % statuses)
        self.assertIsNotNone(refused)
        self.assertEqual(refused.json()["error"]["code"], "rate_limited")
        self.assertGreaterEqual(int(refused.header("retry-after")), 1)
        posts = [a.get(("chat_http_requests_total", "/api/chat", "POST"), 0) -
                 b.get(("chat_http_requests_total", "/api/chat", "POST"), 0) for a, b in zip(after, before)]
        self.assertGreaterEqual(sum(1 for p in posts if p > 0), 2,
                                "nginx sent the posts to one pod only (%s): nothing shared was tested" % posts)
        limited = [a.get(("chat_rate_limited_total", "chat"), 0) - b.get(("chat_rate_limited_total", "chat"), 0)
                   for a, b in zip(after, before)]
        self.assertEqual(sum(limited), statuses.count(429), limited)

    def check_a_deleted_session_ends_on_every_pod(self):
        """A DELETE served by pod-1 resets the session's stream on pod-2 (the id may be used
        again, by another user, whose replies that stream must not get)."""
        uid, sid = new_id("u"), new_id("s")
        q = urllib.parse.urlencode({"session_id": sid, "user_id": uid})
        c = SSEClient(POD_PORTS[1], "/api/sse?" + q)
        try:
            self.assertEqual(c.connected(timeout=10).get("pod_id"), "pod-2")
            r = http_request(POD_PORTS[0], "POST", "/api/chat",
                             json.dumps({"session_id": sid, "user_id": uid, "message": "soon deleted"}),
                             {"Content-Type": "application/json"}, timeout=10)
            self.assertEqual(r.status, 202, r)
            c.collect_until(is_complete_for(r.json()["message_id"]), 30)
            r = http_request(POD_PORTS[0], "DELETE", "/api/sessions/%s?%s" % (sid, urllib.parse.urlencode({"user_id": uid})),
                             timeout=10)
            self.assertEqual(r.status, 200, r)
            evs = c.collect_until(lambda ev: ev.event == "reset", 10)
            self.assertEqual(evs[-1].json().get("reason"), "session_deleted", evs)
        finally:
            c.close()


def pod_metrics(port):
    """{(name, label values...): value} of the counters this test reads, from the pod's /metrics."""
    r = http_request(port, "GET", "/metrics", timeout=5)
    out = {}
    for line in r.body.decode().splitlines():
        m = re.match(r'^(chat_http_requests_total|chat_rate_limited_total)\{([^}]*)\} (\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if m.group(1) == "chat_http_requests_total":
            key = (m.group(1), labels.get("route"), labels.get("method"))
        else:
            key = (m.group(1), labels.get("limit"))
        out[key] = out.get(key, 0) + float(m.group(3))
    return out


class ClusterUpFailureTest(ClusterScriptCase):
    def test_failing_initdb_is_reported_and_what_was_started_is_stopped(self):
        # initdb runs as the postgres user; a folder above the run dir that it cannot enter makes it
        # fail, as a checkout under /root does. Not root: an initdb that fails stands in for it.
        closed = tempfile.mkdtemp(prefix="chatd-e2e-cluster-closed-")  # 0700, ours
        self.addCleanup(shutil.rmtree, closed, True)
        os.rmdir(self.run_dir)  # setUp's, unused here
        self.run_dir = os.path.join(closed, "run")
        self.env["CLUSTER_DIR"] = self.run_dir
        if os.geteuid() != 0:
            fake_bin = os.path.join(closed, "pgbin")
            os.mkdir(fake_bin)
            with open(os.path.join(fake_bin, "initdb"), "w") as f:
                f.write("#!/bin/sh\necho 'initdb: error: could not access directory: Permission denied' >&2\nexit 1\n")
            os.chmod(os.path.join(fake_bin, "initdb"), 0o755)
            self.env["PG_BIN"] = fake_bin
        base = free_port_run(7)
        ports = {"CLUSTER_HTTP_PORT": base, "CLUSTER_NATS_PORT": base + 1, "CLUSTER_REDIS_PORT": base + 2,
                 "CLUSTER_PG_PORT": base + 3, "CLUSTER_POD_BASE_PORT": base + 3, "CLUSTER_PODS": 3}
        self.env.update({k: str(v) for k, v in ports.items()})

        r = self.script("up", timeout=240, check=False)
        self.assertIsNotNone(r, "up did not finish")
        self.collect_pids()
        self.assertEqual(r.returncode, 1, "stdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr))
        self.assertIn("up failed: initdb", r.stderr)
        self.assertIn("Permission denied", r.stderr, "the end of initdb's log is shown")
        self.assertIn("stopping what was started", r.stderr)
        for name in ("redis", "nats"):
            self.assertIn("stopping %s" % name, r.stderr)
            self.assertTrue(os.path.exists(os.path.join(self.run_dir, "logs", name + ".log")),
                            "%s never started" % name)
        self.assertNotIn("starting pod-1", r.stderr)

        for port in (ports["CLUSTER_NATS_PORT"], ports["CLUSTER_REDIS_PORT"]):
            wait_until(lambda: not port_open(port), 10, msg="port %d closed after the failed up" % port)
        left = [(pid, label, cmdline(pid)) for pid, (start, label) in self.tracked.items() if proc_alive(pid, start)]
        self.assertEqual(left, [], "processes left running by the failed up")
        leftovers = [n for n in os.listdir(self.run_dir)
                     if n.endswith(".pid") or n in ("cluster.env", "postgres.started")]
        self.assertEqual(leftovers, [], "a failed up must leave the run dir ready for the next one")


if __name__ == "__main__":
    unittest.main()
