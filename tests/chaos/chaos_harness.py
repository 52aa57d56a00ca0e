"""Chaos harness: the local cluster under faults, with clients that check that nothing is lost.

Standard library only (run with /usr/bin/python3). Builds on tests/e2e: infra.py (NatsServer,
RedisServer, PodServer, WorkerProcess, child-process bookkeeping), pg_infra.py (PostgresServer,
run as the `postgres` user when we are root) and harness.py (raw-socket HTTP and SSE).

  ChaosCluster     3 pods behind nginx, 2 workers, NATS with JetStream on disk (one node, or a
                   3-node JetStream cluster with routes), Redis, PostgreSQL; all on free ports in
                   temp dirs; fault injection (kill -9 / SIGTERM of a pod, kill -9 of a worker in
                   the middle of replies, restart of nats-server / one NATS node, of redis-server,
                   of PostgreSQL)
  EventSourceClient  a browser-like SSE client: follows `retry:`, reconnects through nginx with the
                   last `id:` as Last-Event-ID, applies `reset` events, records every event
  Poster           posts a session's chats one after another, retrying refused POSTs with backoff;
                   a chat counts as accepted only on 202
  run_chaos(cfg)   the whole run: start, load, faults, settle, check; returns a ChaosReport whose
                   `summary` is the one-line JSON report

What is checked for every accepted chat (see ChaosReport):
  - exactly one stored assistant reply, complete or failed with its reason (metadata.error_code);
  - every client's final text for the message (after applying resets) equals the stored text;
  - no chunk id twice on a client (within one attempt), no gap after the last reset;
  - the longest silence of any client while one of its session's replies was being generated.
"""

import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

_HERE = os.path.dirname(os.path.abspath(__file__))
_E2E = os.path.normpath(os.path.join(_HERE, "..", "e2e"))
if _E2E not in sys.path:
    sys.path.insert(0, _E2E)

import harness  # noqa: E402
import infra  # noqa: E402
import pg_infra  # noqa: E402
import harness  # noqa: E402
from harness import HOST, SSEClosed, SSETimeout, free_port  # noqa: E402


# Under faults nginx answers for dead pods (502/504 pages) and nats-server has its own
# /healthz: the OpenAPI checks of the e2e harness are for chatd's answers only, and the
# invariants this harness checks are its own.
def http_request(*args, **kw):
    kw.setdefault("openapi", False)
    return harness.http_request(*args, **kw)


def SSEClient(*args, **kw):  # noqa: N802 (the harness's class, checks off)
    kw.setdefault("openapi", False)
    return harness.SSEClient(*args, **kw)

ROOT = os.path.normpath(os.path.join(_HERE, "..", ".."))
NGINX_TEMPLATE = os.path.join(ROOT, "deploy", "nginx.conf")

POD_KILL = "pod_kill9"
POD_TERM = "pod_sigterm"
WORKER_KILL = "worker_kill9"
NATS_RESTART = "nats_restart"
NATS_NODE_KILL = "nats_node_kill9"
REDIS_RESTART = "redis_restart"
PG_RESTART = "postgres_restart"
SINGLE_NODE_FAULTS = (POD_KILL, WORKER_KILL, NATS_RESTART, POD_TERM, REDIS_RESTART, PG_RESTART)
CLUSTER_FAULTS = SINGLE_NODE_FAULTS + (NATS_NODE_KILL,)

_T0 = time.monotonic()


def say(msg):
    sys.stderr.write("[chaos %7.1fs] %s\n" % (time.monotonic() - _T0, msg))
    sys.stderr.flush()


def wait_until(pred, timeout, interval=0.1, msg=None):
    return infra.wait_until(pred, timeout, interval, msg)


# --------------------------------------------------------------------------
# demo replies (the worker's demo provider; history turns vary)
# --------------------------------------------------------------------------

_DEMO_RE = re.compile(r"^Hello! This is the demo assistant of the Universal Chat Interface\. You said: \"(.*)\"\. "
                      r"(?:This is the first message of our conversation\. |We have exchanged (\d+) earlier messages "
                      r"in this conversation\. )Every word of this reply", re.S)


def is_demo_reply(text, message):
    """Whether `text` is the demo provider's whole reply to `message` (for any history length)."""
    m = _DEMO_RE.match(text or "")
    if not m or m.group(1) != message:
        return False
    turns = int(m.group(2)) if m.group(2) else 0
    return text == infra.demo_reply(message, turns)


# --------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------

class NatsCluster:
    """One nats-server, or N JetStream nodes with routes (cluster name, server names, store dirs)."""

    def __init__(self, nodes, tmpdir):
        self.tmpdir = tmpdir
        self.nodes = []
        if nodes == 1:
            self.nodes.append(infra.NatsServer(name="nats", tmpdir=os.path.join(tmpdir, "nats")))
            return
        client = [free_port() for _ in range(nodes)]
        routes = [free_port() for _ in range(nodes)]
        monitor = [free_port() for _ in range(nodes)]
        for i in range(nodes):
            name = "nats-%d" % (i + 1)
            others = ",".join("nats://%s:%d" % (HOST, routes[j]) for j in range(nodes) if j != i)
            extra = ["--server_name", name, "--cluster_name", "chat-chaos",
                     "--cluster", "nats://%s:%d" % (HOST, routes[i]), "--routes", others]
            self.nodes.append(infra.NatsServer(port=client[i], monitor_port=monitor[i], name=name,
                                               tmpdir=os.path.join(tmpdir, name), extra_args=extra))

    @property
    def clustered(self):
        return len(self.nodes) > 1

    @property
    def url(self):
        return ",".join(n.url for n in self.nodes)

    def start(self):
        for n in self.nodes:
            n.start(timeout=30.0)
        self.wait_healthy(60.0)

    def healthz(self, node):
        try:
            r = http_request(node.monitor_port, "GET", "/healthz", timeout=2.0)
            return r.status == 200 and r.json().get("status") == "ok"
        except (OSError, EOFError, AssertionError):
            return False

    def wait_healthy(self, timeout):
        for n in self.nodes:
            if n.alive():
                wait_until(lambda: self.healthz(n), timeout, interval=0.2, msg="%s /healthz ok" % n.name)

    def kill(self):
        for n in self.nodes:
            n.kill()

    def logs(self, tail):
        return [(n.name, n.log(tail)) for n in self.nodes]


class Nginx(infra._ChildProcess):
    """nginx (Debian's) in front of the pods, from deploy/nginx.conf; runs in the foreground."""

    kind = "nginx"

    def __init__(self, pod_ports, tmpdir):
        super().__init__("nginx", tmpdir)
        self.pod_ports = list(pod_ports)
        self.port = None
        self.conf = os.path.join(self.tmpdir, "nginx.conf")

    def render(self):
        with open(NGINX_TEMPLATE) as f:
            text = f.read()
        # A pod that failed is skipped for a moment only: they come back within seconds here.
        upstreams = "\n".join("    server %s:%d max_fails=1 fail_timeout=2s;" % (HOST, p) for p in self.pod_ports)
        text = (text.replace("@RUN_DIR@", self.tmpdir).replace("@HTTP_PORT@", str(self.port))
                .replace("@UPSTREAMS@", upstreams))
        with open(self.conf, "w") as f:
            f.write(text)

    def kill(self):
        """Fast shutdown (SIGTERM): the master stops its workers before it exits. A SIGKILL of the
        master alone left its workers running after the run, holding the port."""
        return self.stop(timeout=10.0, sig=signal.SIGTERM)

    def start(self, timeout=20.0):
        binary = infra.find_binary("nginx")
        os.makedirs(os.path.join(self.tmpdir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(self.tmpdir, "nginx"), exist_ok=True)
        os.chmod(self.tmpdir, 0o755)  # nginx workers may run as another user
        for attempt in range(3):
            self.port = free_port()
            self.render()
            self._spawn([binary, "-c", self.conf, "-p", self.tmpdir, "-g", "daemon off;"])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive():
                if infra.port_open(self.port):
                    return self
                time.sleep(0.05)
            log = self.log() + self.error_log()
            self.kill()
            if attempt < 2 and "in use" in log:
                continue
            raise harness.StartError("nginx did not start; log:\n%s" % log)
        raise harness.StartError("could not start nginx")

    def error_log(self, tail=4000):
        try:
            with open(os.path.join(self.tmpdir, "logs", "nginx-error.log"), "rb") as f:
                return f.read()[-tail:].decode(errors="replace")
        except OSError:
            return ""


class ChaosCluster:
    """Everything the chaos run needs, on free ports in one temp dir."""

    def __init__(self, nats_nodes=1, pods=3, workers=2, pod_env=None, worker_env=None, keep=False):
        self.tmpdir = tempfile.mkdtemp(prefix="chatd-chaos-")
        self.keep = keep
        self.nats = NatsCluster(nats_nodes, self.tmpdir)
        self.redis = infra.RedisServer(tmpdir=os.path.join(self.tmpdir, "redis"))
        self.pg = pg_infra.PostgresServer(name="chaos-pg")
        self.db = None
        self.pod_ids = ["pod-%d" % (i + 1) for i in range(pods)]
        self.n_workers = workers
        self.pod_env = dict(pod_env or {})
        self.worker_env = dict(worker_env or {})
        self.pods = []
        self.workers = []
        self.nginx = None
        self.events = []  # (monotonic time, text): what the fault injector did
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------
    def common_env(self):
        env = {"NATS_URL": self.nats.url, "REDIS_HOST": HOST, "REDIS_PORT": str(self.redis.port),
               "JS_REPLICAS": str(len(self.nats.nodes))}
        env.update(self.pg.chatd_env(self.db))
        return env

    def start(self):
        try:
            say("starting NATS (%d node%s), Redis, PostgreSQL" % (len(self.nats.nodes),
                                                                 "s" if self.nats.clustered else ""))
            self.nats.start()
            self.redis.start()
            self.pg.start()
            self.db = self.pg.create_database("chaos")
            for pid in self.pod_ids:
                env = self.common_env()
                env.update(self.pod_env)
                pod = infra.PodServer(pid, env=env)
                self.pods.append(pod)
                pod.start(timeout=60.0)
            for i in range(self.n_workers):
                env = self.common_env()
                env.update(self.worker_env)
                w = infra.WorkerProcess(name="worker-%d" % (i + 1), env=env,
                                        tmpdir=os.path.join(self.tmpdir, "worker-%d" % (i + 1)))
                self.workers.append(w)
                w.start(timeout=30.0)
            for p in self.pods:
                p.wait_ready(90.0)
            self.nginx = Nginx([p.port for p in self.pods], os.path.join(self.tmpdir, "nginx"))
            self.nginx.start()
            wait_until(lambda: http_request(self.nginx.port, "GET", "/health", timeout=2.0).status == 200, 20.0,
                       msg="/health through nginx")
            say("cluster up: nginx :%d, pods %s, %d workers, NATS %s" % (
                self.nginx.port, ", ".join("%s:%d" % (p.pod_id, p.port) for p in self.pods), len(self.workers),
                self.nats.url))
        except BaseException:
            sys.stderr.write(self.dump_logs(4000))
            self.cleanup()
            raise
        return self

    def cleanup(self):
        if self.nginx:
            self.nginx.kill()
        for w in self.workers:
            w.kill()
        for p in self.pods:
            p.kill()
        self.redis.kill()
        self.nats.kill()
        try:
            self.pg.stop(mode="immediate", timeout=15.0)
        except Exception:  # noqa: BLE001
            pass
        if not (self.keep or os.environ.get("E2E_KEEP_LOGS") == "1"):
            for p in self.pods:
                p.cleanup()
            self.pg.cleanup()
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        else:
            say("kept: %s, %s, %s" % (self.tmpdir, self.pg.tmpdir, " ".join(p.tmpdir for p in self.pods)))

    def note(self, text):
        with self._lock:
            self.events.append((time.monotonic(), text))
        say(text)

    # -- health ------------------------------------------------------------------
    def pod_health(self, pod):
        try:
            r = http_request(pod.port, "GET", "/health", timeout=2.0)
            return r.json() if r.status in (200, 503) else None
        except (OSError, EOFError, AssertionError):
            return None

    def wait_recovered(self, timeout=90.0):
        """Every pod ready (bus, JetStream and store), every worker up, NATS healthy."""
        self.nats.wait_healthy(timeout)
        for p in self.pods:
            p.wait_ready(timeout)
        for w in self.workers:
            if not w.alive():
                raise AssertionError("%s is not running" % w.name)

    # -- faults ------------------------------------------------------------------
    def busiest_pod(self, rng, exclude=()):
        """The pod holding the most streams (random among equals)."""
        candidates = [p for p in self.pods if p.alive() and p.pod_id not in exclude] or \
            [p for p in self.pods if p.alive()]
        scored = []
        for p in candidates:
            h = self.pod_health(p) or {}
            scored.append((h.get("active_connections", 0), rng.random(), p))
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return scored[0][2]

    def kill9_pod(self, rng, down_for=1.0):
        pod = self.busiest_pod(rng)
        h = self.pod_health(pod) or {}
        pod.kill9()
        self.note("%s: kill -9 %s (%s streams, %s buffers)" % (POD_KILL, pod.pod_id, h.get("active_connections"),
                                                              h.get("active_buffers")))
        time.sleep(down_for)
        pod.restart(timeout=60.0)
        return pod.pod_id

    def sigterm_pod(self, rng, timeout=40.0):
        pod = self.busiest_pod(rng)
        h = self.pod_health(pod) or {}
        self.note("%s: SIGTERM %s (%s streams, %s buffers)" % (POD_TERM, pod.pod_id, h.get("active_connections"),
                                                              h.get("active_buffers")))
        t = time.monotonic()
        code = pod.stop(timeout=timeout)
        self.note("%s: %s exited %s after %.1fs%s" % (POD_TERM, pod.pod_id, code, time.monotonic() - t,
                                                     " (SIGKILLed: did not stop in time)" if pod.killed else ""))
        problem = None if code == 0 and not pod.killed else "%s exit code %s after SIGTERM" % (pod.pod_id, code)
        pod.restart(timeout=60.0)
        return pod.pod_id, problem

    def generating_worker(self, rng):
        """A worker that started a generation within the last few seconds (else any live one)."""
        best = None
        for w in self.workers:
            if not w.alive():
                continue
            tail = w.log(20000)
            n = tail.count("generation_started")
            if best is None or n > best[0]:
                best = (n, w)
        return best[1] if best else rng.choice(self.workers)

    def kill9_worker(self, rng, down_for=1.0):
        w = self.generating_worker(rng)
        w.kill9()
        self.note("%s: kill -9 %s" % (WORKER_KILL, w.name))
        time.sleep(down_for)
        w.start(timeout=30.0)
        return w.name

    def restart_nats(self, rng, down_for=1.0):
        node = rng.choice(self.nats.nodes) if self.nats.clustered else self.nats.nodes[0]
        self.note("%s: restart %s" % (NATS_RESTART, node.name))
        node.restart(down_for=down_for, timeout=30.0)
        return node.name

    def kill9_nats_node(self, rng, down_for=5.0):
        node = rng.choice(self.nats.nodes)
        node.kill()
        self.note("%s: kill -9 %s" % (NATS_NODE_KILL, node.name))
        time.sleep(down_for)
        node.start(timeout=30.0)
        return node.name

    def restart_redis(self, rng, down_for=1.0):
        self.note("%s: restart redis-server (comes back empty)" % REDIS_RESTART)
        self.redis.restart(down_for=down_for, timeout=30.0)
        return "redis"

    def restart_postgres(self, rng, down_for=2.0):
        self.note("%s: stop PostgreSQL (fast), %.0fs down" % (PG_RESTART, down_for))
        self.pg.stop(mode="fast")
        time.sleep(down_for)
        self.pg.start()
        return "postgres"

    def inject(self, kind, rng):
        """Injects one fault and waits until the cluster is whole again; returns a record."""
        t0 = time.monotonic()
        problem = None
        if kind == POD_KILL:
            target = self.kill9_pod(rng)
        elif kind == POD_TERM:
            target, problem = self.sigterm_pod(rng)
        elif kind == WORKER_KILL:
            target = self.kill9_worker(rng)
        elif kind == NATS_RESTART:
            target = self.restart_nats(rng)
        elif kind == NATS_NODE_KILL:
            if not self.nats.clustered:
                raise ValueError("%s needs a NATS cluster" % kind)
            target = self.kill9_nats_node(rng)
        elif kind == REDIS_RESTART:
            target = self.restart_redis(rng)
        elif kind == PG_RESTART:
            target = self.restart_postgres(rng)
        else:
            raise ValueError("unknown fault %r" % kind)
        self.wait_recovered()
        rec = {"kind": kind, "target": target, "at": t0, "recovered_s": round(time.monotonic() - t0, 2)}
        if problem:
            rec["problem"] = problem
        self.note("%s: recovered after %.1fs" % (kind, rec["recovered_s"]))
        return rec

    # -- data --------------------------------------------------------------------
    def stored_assistant_messages(self):
        rows = self.pg.query(self.db, "SELECT message_id, session_id, status, content, metadata "
                                      "FROM messages WHERE role = 'assistant'", timeout=60.0)
        return rows

    def stored_user_messages(self):
        return self.pg.query(self.db, "SELECT message_id, session_id, content FROM messages WHERE role = 'user'",
                             timeout=60.0)

    def dump_logs(self, tail=6000):
        parts = []
        for name, log in self.nats.logs(tail):
            parts.append("\n----- log of %s -----\n%s" % (name, log))
        parts.append("\n----- log of redis -----\n%s" % self.redis.log(tail))
        parts.append("\n----- log of postgres -----\n%s" % self.pg.log_tail(tail))
        for p in self.pods:
            parts.append("\n----- log of %s -----\n%s" % (p.pod_id, p.log(tail)))
        for w in self.workers:
            parts.append("\n----- log of %s -----\n%s" % (w.name, w.log(tail)))
        if self.nginx:
            parts.append("\n----- nginx error log -----\n%s" % self.nginx.error_log(tail))
        return "".join(parts) + "\n"

    def grep_logs(self, needle, limit=20):
        """Lines of the pods' and workers' logs that contain `needle`."""
        out = []
        for proc in list(self.pods) + list(self.workers):
            name = getattr(proc, "pod_id", None) or proc.name
            for line in proc.log(50_000_000).splitlines():
                if needle in line:
                    out.append("%s: %s" % (name, line[:400]))
                    if len(out) >= limit:
                        return out
        return out


# --------------------------------------------------------------------------
# HTTP through nginx
# --------------------------------------------------------------------------

def post_chat(port, session_id, user_id, message, timeout=15.0):
    body = json.dumps({"session_id": session_id, "user_id": user_id, "message": message})
    return http_request(port, "POST", "/api/chat", body, {"Content-Type": "application/json"}, timeout=timeout)


def load_history(port, session_id, user_id, timeout=10.0):
    """Every message of the session (pages of 200), oldest first; raises on failure."""
    out, before = [], None
    while True:
        q = {"user_id": user_id, "limit": 200}
        if before:
            q["before"] = before
        r = http_request(port, "GET", "/api/sessions/%s/messages?%s" % (session_id, urllib.parse.urlencode(q)),
                         timeout=timeout)
        if r.status == 404 and before is None:
            return []
        if r.status != 200:
            raise IOError("history: %s %r" % (r.status, r.body[:200]))
        d = r.json()
        out = (d.get("messages") or []) + out
        before = d.get("next_before")
        if not before:
            return out


# --------------------------------------------------------------------------
# the browser-like client
# --------------------------------------------------------------------------

class MessageView:
    """One reply as one client sees it: the chunks of its current attempt, applied in order."""

    __slots__ = ("mid", "next_id", "parts", "attempt", "final_chunk", "completed", "final_text", "completed_at",
                 "first_completed_at", "segments", "dups", "gap", "gaps_total", "mixed", "statuses", "reloaded",
                 "first_at", "errors")

    def __init__(self, mid):
        self.mid = mid
        self.segments = 0
        self.dups = []          # (chunk id, attempt) received twice within one attempt
        self.gaps_total = 0     # gaps seen in any segment (a reset may have repaired them)
        self.mixed = 0          # chunks of another attempt without a reset in between
        self.statuses = []      # message_complete statuses
        self.errors = []        # error event codes
        self.first_at = None
        # When the client first saw it end: a reply sent again from its start (reply_resent,
        # after a resume) ends again later, which is not how long the user waited for it.
        self.first_completed_at = None
        self.new_segment()

    def new_segment(self):
        self.segments += 1
        self.next_id = 0
        self.parts = []
        self.attempt = None
        self.final_chunk = False
        self.completed = False
        self.final_text = None
        self.completed_at = None
        self.gap = None         # the first gap of this segment: (expected id, got id)
        self.reloaded = False

    @property
    def text(self):
        return "".join(self.parts)

    def ended_at(self, t):
        self.completed = True
        self.completed_at = t
        if self.first_completed_at is None:
            self.first_completed_at = t


class EventSourceClient(threading.Thread):
    """A browser EventSource (and the page around it) on one session, through nginx."""

    def __init__(self, run, session, name):
        super().__init__(name=name, daemon=True)
        self.run_ = run
        self.session = session
        self.port = run.cluster.nginx.port
        self.label = name
        self.last_event_id = None
        self.retry_ms = 3000
        self.views = {}
        self.order = []            # message ids in the order first seen
        self.activity = []         # monotonic times of events other than ping (what a user sees)
        self.log = collections.deque(maxlen=5000)  # (t, what) for reports
        self.connects = 0
        self.refusals = 0          # non-200 answers and connection failures
        self.resets = collections.Counter()
        self.pods = collections.Counter()
        self.reloads = 0
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.sse = None

    # -- model ---------------------------------------------------------------------
    def view(self, mid):
        v = self.views.get(mid)
        if v is None:
            v = self.views[mid] = MessageView(mid)
            self.order.append(mid)
        return v

    def _note(self, what):
        self.log.append((time.monotonic(), what))

    def on_event(self, ev):
        t = ev.received_at
        if ev.id is not None:
            self.last_event_id = ev.id
        if ev.event == "ping":
            return
        reload, wanted = False, None
        with self.lock:
            self.activity.append(t)
            try:
                d = ev.json()
            except AssertionError:
                self._note("bad event %r" % ev)
                return
            if ev.event == "connected":
                self.pods[d.get("pod_id")] += 1
                self._note("connected to %s (Last-Event-ID %s)" % (d.get("pod_id"), self.sent_cursor))
            elif ev.event == "chunk":
                self._chunk(ev, d, t)
            elif ev.event == "message_complete":
                mid = d.get("message_id")
                v = self.view(mid)
                v.statuses.append(d.get("status"))
                if not v.completed and v.next_id == 0:
                    # The end of a reply none of whose chunks came here (a stream
                    # whose resume failed gets no reply from its middle).
                    wanted = mid
                elif not v.completed:
                    v.ended_at(t)
                    v.final_text = v.text
                    self._note("end of %s after chunk %d" % (mid, v.next_id - 1))
            elif ev.event == "error":
                v = self.view(d.get("message_id"))
                v.errors.append(d.get("code"))
                self._note("error %s %s" % (d.get("message_id"), d.get("code")))
            elif ev.event == "reset":
                reason = d.get("reason")
                self.resets[reason] += 1
                mid = d.get("message_id")
                self._note("reset %s %s" % (reason, mid or ""))
                if mid:
                    self.view(mid).new_segment()
                else:
                    reload = True
            elif ev.event == "delayed":
                pass
        if reload:
            self._reload()
        if wanted:
            self._take_from_history(wanted)

    def _chunk(self, ev, d, t):
        mid, cid = d.get("message_id"), d.get("chunk_id")
        v = self.view(mid)
        if v.first_at is None:
            v.first_at = t
            self._note("first chunk of %s: %s" % (mid, cid))
        if ev.id != "%s:%s" % (mid, cid):
            self._note("chunk id field %r for %s:%s" % (ev.id, mid, cid))
        attempt = d.get("attempt", 1)
        first = d.get("first_chunk_id", cid)  # a coalesced event covers first..cid
        if v.attempt is not None and attempt != v.attempt and first != 0:
            v.mixed += 1
            self._note("chunk %s:%s of attempt %s after attempt %s without reset" % (mid, cid, attempt, v.attempt))
        if v.completed and v.reloaded and first == 0:
            v.new_segment()  # after a reload the reply streams again from its start
        if first < v.next_id:
            v.dups.append((cid, attempt))
            self._note("duplicate %s:%s (expected %s)" % (mid, cid, v.next_id))
            return
        if first > v.next_id:
            v.gaps_total += 1
            if v.gap is None:
                v.gap = (v.next_id, first)
            self._note("gap %s: expected %s, got %s" % (mid, v.next_id, first))
        v.next_id = cid + 1
        v.attempt = attempt
        if d.get("chunk_type", "content") == "content":
            v.parts.append(d.get("chunk") or "")
        if d.get("is_final"):
            v.final_chunk = True

    def _reload(self):
        """A reset without message_id: the page reloads the session's history."""
        self.reloads += 1
        msgs = self._history()
        stored = {m["message_id"]: m for m in (msgs or []) if m.get("role") == "assistant"}
        with self.lock:
            self._apply_history(stored)

    def _history(self, until=lambda msgs: True):
        """The session's messages (None if the server did not answer for 60 s); asked again
        every 500 ms, at most 10 times, while `until` is false (the page's STORED_REPLY_TRIES)."""
        deadline = time.monotonic() + 60.0
        msgs, tries = None, 0
        while time.monotonic() < deadline and not self.stop_event.is_set():
            try:
                msgs = load_history(self.port, self.session.sid, self.session.uid)
            except (OSError, EOFError, AssertionError, IOError):
                time.sleep(0.5)
                continue
            tries += 1
            if until(msgs) or tries >= 10:
                break
            time.sleep(0.5)
        return msgs

    def _take_from_history(self, mid):
        """The end of a reply none of whose chunks came here: the page takes its text from
        the history (it is stored a moment after its end)."""
        msgs = self._history(lambda msgs: any(m.get("message_id") == mid for m in msgs))
        row = next((m for m in (msgs or []) if m.get("message_id") == mid), None)
        with self.lock:
            if row is None:
                self._note("end of %s: not in the history" % mid)
                return
            v = self.view(mid)
            v.ended_at(time.monotonic())
            v.final_text = row.get("content") or ""
            v.reloaded = True
            self._note("end of %s: text from the history" % mid)

    def _apply_history(self, stored):
        # A reply the client had seen end stays ended then: the reload only redraws it (else its
        # interval would reach the reload and count the idle time before it as silence).
        ended_at = {mid: v.completed_at for mid, v in self.views.items() if v.completed}
        for mid in list(self.views):
            self.views[mid].new_segment()
        for mid, m in stored.items():
            v = self.view(mid)
            v.ended_at(ended_at.get(mid) or time.monotonic())
            v.final_text = m.get("content") or ""
            v.reloaded = True
        self._note("history reloaded: %d replies stored" % len(stored))

    # -- connection ------------------------------------------------------------------
    def run(self):
        q = urllib.parse.urlencode({"session_id": self.session.sid, "user_id": self.session.uid})
        path = "/api/sse?" + q
        first = True
        while not self.stop_event.is_set():
            if not first:
                self.stop_event.wait(max(0.05, self.retry_ms / 1000.0))
                if self.stop_event.is_set():
                    break
            first = False
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else None
            self.sent_cursor = self.last_event_id
            try:
                c = SSEClient(self.port, path, headers=headers, connect_timeout=5.0)
            except OSError as e:
                self.refusals += 1
                self._note("connect failed: %r" % e)
                continue
            self.sse = c
            try:
                c.open(timeout=15.0)
            except (OSError, EOFError, AssertionError, socket.timeout, SSETimeout) as e:
                self.refusals += 1
                self._note("open failed: %r" % e)
                c.close()
                continue
            if c.status != 200:
                self.refusals += 1
                self._note("status %s" % c.status)
                c.close()
                continue
            self.connects += 1
            try:
                while not self.stop_event.is_set():
                    try:
                        ev = c.next_event(timeout=0.5)
                    except SSETimeout:
                        continue
                    self.on_event(ev)
            except SSEClosed:
                self._note("stream ended")
            except (OSError, EOFError, AssertionError) as e:
                self._note("stream failed: %r" % e)
            finally:
                if c.retries:
                    try:
                        self.retry_ms = int(c.retries[-1][1])
                    except ValueError:
                        pass
                c.close()
        self.sse = None

    sent_cursor = None

    def stop(self):
        self.stop_event.set()

    # -- queries -------------------------------------------------------------------
    def completed(self, mid):
        with self.lock:
            v = self.views.get(mid)
            return bool(v and v.completed)


# --------------------------------------------------------------------------
# sessions and posters
# --------------------------------------------------------------------------

class Chat:
    __slots__ = ("mid", "message", "accepted_at", "attempts", "sid")

    def __init__(self, sid, mid, message, accepted_at, attempts):
        self.sid, self.mid, self.message, self.accepted_at, self.attempts = sid, mid, message, accepted_at, attempts


class Session:
    def __init__(self, index, devices, rng):
        self.index = index
        tag = "%04x" % rng.randrange(1 << 16)
        self.sid = "chaos_s%d_%s" % (index, tag)
        self.uid = "chaos_u%d_%s" % (index, tag)
        self.devices = devices
        self.clients = []
        self.chats = []          # accepted, in order
        self.abandoned = 0       # posts given up (never a 202)
        self.refused = collections.Counter()  # status or error kind -> count
        self.client_errors = []  # 4xx answers: never expected


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


class Poster(threading.Thread):
    """Posts one session's chats, one after another (sometimes before the last reply ended)."""

    def __init__(self, run, session, seed):
        super().__init__(name="poster-%d" % session.index, daemon=True)
        self.run_ = run
        self.session = session
        self.rng = random.Random(seed)
        self.port = run.cluster.nginx.port

    def run(self):
        s, cfg = self.session, self.run_.cfg
        k = 0
        while not self.run_.posting_over.is_set():
            k += 1
            words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(*cfg.message_words)))
            message = "chaos %d.%d %s" % (s.index, k, words)
            chat = self.post(message)
            if chat is None:
                continue
            s.chats.append(chat)
            if self.rng.random() < cfg.overlap:
                self.run_.posting_over.wait(self.rng.uniform(0.3, 1.0))  # the next one while this streams
                continue
            deadline = time.monotonic() + cfg.reply_wait
            while time.monotonic() < deadline and not self.run_.posting_over.is_set():
                if s.clients[0].completed(chat.mid):
                    break
                time.sleep(0.1)
            self.run_.posting_over.wait(self.rng.uniform(*cfg.think))

    def post(self, message):
        s = self.session
        backoff = 0.25
        attempts = 0
        while not self.run_.posting_over.is_set():
            attempts += 1
            try:
                r = post_chat(self.port, s.sid, s.uid, message)
            except (OSError, EOFError, AssertionError) as e:
                s.refused[type(e).__name__] += 1
                r = None
            if r is not None and r.status == 202:
                try:
                    mid = r.json()["message_id"]
                except (AssertionError, KeyError, TypeError):
                    s.client_errors.append("202 without message_id: %r" % r.body[:200])
                    return None
                return Chat(s.sid, mid, message, time.monotonic(), attempts)
            if r is not None:
                s.refused[r.status] += 1
                if 400 <= r.status < 500:
                    s.client_errors.append("POST -> %s %r" % (r.status, r.body[:200]))
                    return None
            self.run_.posting_over.wait(backoff * self.rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 2.0)
        s.abandoned += 1
        return None


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

class ChaosConfig:
    """Knobs of one run. `faults`: the kinds in order (each once), or None to draw them at random
    from `fault_kinds` every `fault_interval` seconds until `duration` has passed."""

    def __init__(self, **kw):
        self.nats_nodes = 1
        self.pods = 3
        self.workers = 2
        self.sessions = 8
        self.two_device_share = 0.5      # sessions with a second device
        self.duration = 90.0             # load phase (random faults), seconds
        self.faults = None
        self.fault_kinds = None
        self.fault_interval = 8.0        # pause between a recovery and the next fault
        self.warmup = 8.0
        self.cooldown = 6.0              # posting goes on after the last fault
        self.settle_timeout = 90.0
        self.reply_wait = 45.0
        self.overlap = 0.2
        self.think = (0.2, 1.2)
        self.message_words = (2, 24)
        self.seed = int(time.time())
        self.keep = False
        # demo pace: ~40..60 chunks of 2 words, 80 ms apart: a reply streams for 3..5 s
        self.chunk_delay = "80ms"
        self.words_per_chunk = 2
        self.ack_wait = "5s"
        self.sse_retry = "1s"
        self.pod_env = {}
        self.worker_env = {}
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError("unknown chaos setting %r" % k)
            setattr(self, k, v)
        if self.fault_kinds is None:
            self.fault_kinds = CLUSTER_FAULTS if self.nats_nodes > 1 else SINGLE_NODE_FAULTS

    def envs(self):
        common = {"JS_ACK_WAIT": self.ack_wait, "LOG_LEVEL": "info"}
        pod = dict(common, SSE_RETRY=self.sse_retry, SERVER_SHUTDOWN_TIMEOUT="20s")
        pod.update(self.pod_env)
        worker = dict(common, WORKER_DEMO_CHUNK_DELAY=self.chunk_delay,
                      WORKER_DEMO_WORDS_PER_CHUNK=str(self.words_per_chunk), SERVER_SHUTDOWN_TIMEOUT="20s")
        worker.update(self.worker_env)
        return pod, worker


class ChaosRun:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        pod_env, worker_env = cfg.envs()
        self.cluster = ChaosCluster(cfg.nats_nodes, cfg.pods, cfg.workers, pod_env, worker_env, keep=cfg.keep)
        self.sessions = []
        self.posters = []
        self.faults = []
        self.posting_over = threading.Event()
        self.timings = {}

    def start_load(self):
        for i in range(self.cfg.sessions):
            devices = 2 if self.rng.random() < self.cfg.two_device_share else 1
            s = Session(i, devices, self.rng)
            for d in range(devices):
                s.clients.append(EventSourceClient(self, s, "s%d-d%d" % (i, d)))
            self.sessions.append(s)
        for s in self.sessions:
            for c in s.clients:
                c.start()
        # every device has its stream before the first chat (as a page that opens, then posts)
        wait_until(lambda: all(c.connects for s in self.sessions for c in s.clients), 60.0,
                   msg="every client connected")
        for s in self.sessions:
            p = Poster(self, s, self.rng.randrange(1 << 30))
            self.posters.append(p)
            p.start()

    def schedule(self):
        cfg = self.cfg
        time.sleep(cfg.warmup)
        if cfg.faults is not None:
            for kind in cfg.faults:
                self.faults.append(self.cluster.inject(kind, self.rng))
                time.sleep(cfg.fault_interval)
            return
        end = time.monotonic() + cfg.duration - cfg.warmup
        # every kind once in a shuffled round, then again: the counts stay even
        round_ = []
        while time.monotonic() < end:
            if not round_:
                round_ = list(cfg.fault_kinds)
                self.rng.shuffle(round_)
            self.faults.append(self.cluster.inject(round_.pop(), self.rng))
            pause = self.rng.uniform(0.5, 1.5) * cfg.fault_interval
            time.sleep(max(0.0, min(pause, end - time.monotonic())))

    def all_settled(self, stored_ids):
        for s in self.sessions:
            for chat in s.chats:
                if chat.mid not in stored_ids:
                    return False
                for c in s.clients:
                    if not c.completed(chat.mid):
                        return False
        return True

    def settle(self):
        deadline = time.monotonic() + self.cfg.settle_timeout
        while True:
            try:
                stored = {r["message_id"] for r in self.cluster.stored_assistant_messages()}
            except pg_infra.PgError:
                stored = set()
            if self.all_settled(stored) or time.monotonic() >= deadline:
                return
            time.sleep(1.0)

    def execute(self):
        t0 = time.monotonic()
        self.cluster.start()
        t1 = time.monotonic()
        self.timings["setup_s"] = round(t1 - t0, 1)
        try:
            self.start_load()
            self.schedule()
            time.sleep(self.cfg.cooldown)
            self.posting_over.set()
            for p in self.posters:
                p.join(30.0)
            t2 = time.monotonic()
            self.timings["load_s"] = round(t2 - t1, 1)
            say("posting over: %d chats accepted; settling" % sum(len(s.chats) for s in self.sessions))
            self.settle()
            t3 = time.monotonic()
            self.timings["settle_s"] = round(t3 - t2, 1)
            for s in self.sessions:
                for c in s.clients:
                    c.stop()
            for s in self.sessions:
                for c in s.clients:
                    c.join(5.0)
            stored = self.cluster.stored_assistant_messages()
            users = self.cluster.stored_user_messages()
            report = ChaosReport(self, stored, users)
            self.timings["total_s"] = round(time.monotonic() - t0, 1)
            report.finish()
            if report.failed():
                report.logs = self.cluster.dump_logs(6000)
            return report
        finally:
            self.posting_over.set()
            for s in self.sessions:
                for c in s.clients:
                    c.stop()
            self.cluster.cleanup()


def _percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    i = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[i]


def longest_silence(activity, intervals):
    """The longest stretch inside any interval [a, b, tag] without an activity time, as
    (length, (start, end, tag))."""
    best, where = 0.0, None
    acts = sorted(activity)
    import bisect
    for a, b, tag in intervals:
        if b <= a:
            continue
        i = bisect.bisect_right(acts, a)
        prev = a
        while i < len(acts) and acts[i] < b:
            if acts[i] - prev > best:
                best, where = acts[i] - prev, (prev, acts[i], tag)
            prev = acts[i]
            i += 1
        if b - prev > best:
            best, where = b - prev, (prev, b, tag)
    return best, where


class ChaosReport:
    """The invariants, counted over every accepted chat and every client."""

    def __init__(self, run, stored_rows, user_rows):
        self.run = run
        self.cfg = run.cfg
        self.stored = {r["message_id"]: r for r in stored_rows}
        self.user_rows = user_rows
        self.violations = []
        self.logs = ""
        self.summary = {}

    def violation(self, kind, text):
        self.violations.append((kind, text))

    def finish(self):
        run, cfg = self.run, self.cfg
        end = time.monotonic()
        accepted = [c for s in run.sessions for c in s.chats]
        accepted_ids = {c.mid for c in accepted}
        lost = duplicated = mismatched = gaps = mixed = 0
        stored_once = 0
        statuses = collections.Counter()
        error_codes = collections.Counter()
        bad_text = 0
        client_incomplete = 0
        latencies = []
        slowest = (0.0, None, None)  # (seconds, client, chat): the reply a client waited longest for
        silences = []
        for s in run.sessions:
            for chat in s.chats:
                row = self.stored.get(chat.mid)
                if row is None:
                    lost += 1
                    self.violation("lost", "%s (session %s, %r) was accepted but never stored"
                                   % (chat.mid, s.sid, chat.message[:60]))
                    continue
                status = row.get("status")
                statuses[status] += 1
                meta = row.get("metadata") or {}
                if isinstance(meta, str):
                    meta = json.loads(meta)
                ok = status == "complete" or (status in ("error", "incomplete", "cancelled") and meta.get("error_code"))
                if status != "complete":
                    error_codes[meta.get("error_code") or "(none)"] += 1
                if ok:
                    stored_once += 1
                else:
                    self.violation("stored", "%s stored %s without a reason: %r" % (chat.mid, status, meta))
                if status == "complete" and not is_demo_reply(row.get("content"), chat.message):
                    bad_text += 1
                    self.violation("stored_text", "%s stored complete but its text is not the demo reply to %r: %r"
                                   % (chat.mid, chat.message, (row.get("content") or "")[:300]))
            for c in s.clients:
                # stream invariants, for every reply the client saw (accepted or not)
                for mid in c.order:
                    v = c.views[mid]
                    if v.dups:
                        duplicated += 1
                        self.violation("duplicate", "%s: %s got chunk ids %s twice%s"
                                       % (c.label, mid, v.dups[:10], self._client_story(c, mid)))
                    if v.gap is not None:
                        gaps += 1
                        self.violation("gap", "%s: %s after its last reset expected chunk %d, got %d (errors %s)%s"
                                       % (c.label, mid, v.gap[0], v.gap[1], v.errors, self._client_story(c, mid)))
                    if v.mixed:
                        mixed += 1
                        self.violation("mixed_attempts", "%s: %s mixed chunks of two attempts without a reset%s"
                                       % (c.label, mid, self._client_story(c, mid)))
                intervals = []
                for chat in s.chats:
                    v = c.views.get(chat.mid)
                    row = self.stored.get(chat.mid)
                    done_at = v.first_completed_at if v and v.first_completed_at else end
                    intervals.append((chat.accepted_at, min(done_at, end), chat))
                    if v and v.completed and v.first_completed_at:
                        latencies.append(v.first_completed_at - chat.accepted_at)
                        slowest = max(slowest, (latencies[-1], c, chat), key=lambda t: t[0])
                    if row is None:
                        continue
                    if v is None or not v.completed:
                        client_incomplete += 1
                        mismatched += 1
                        self.violation("mismatch", "%s never got the end of %s (stored %s); saw %s"
                                       % (c.label, chat.mid, row.get("status"),
                                          "nothing" if v is None else "chunks up to %d, errors %s, segments %d"
                                          % (v.next_id - 1, v.errors, v.segments)))
                    elif v.final_text != (row.get("content") or ""):
                        mismatched += 1
                        self.violation("mismatch", "%s: final text of %s differs from the stored one (%s):\n"
                                       "      client: %r\n      stored: %r"
                                       % (c.label, chat.mid, row.get("status"), v.final_text[-200:],
                                          (row.get("content") or "")[-200:]))
                silence, where = longest_silence(c.activity, intervals)
                silences.append((silence, c.label, where))
        # replies stored for a POST that got no 202 (an answer lost on its way back, then posted again)
        orphans = [mid for mid, row in self.stored.items() if mid not in accepted_ids]
        silences.sort(key=lambda t: t[0], reverse=True)
        longest = silences[0] if silences else (0.0, None, None)
        fault_counts = collections.Counter(f["kind"] for f in run.faults)
        fault_problems = [f["problem"] for f in run.faults if f.get("problem")]
        for p in fault_problems:
            self.violation("fault", p)
        refused = collections.Counter()
        for s in run.sessions:
            refused.update({str(k): v for k, v in s.refused.items()})
            for e in s.client_errors:
                self.violation("client_error", "%s: %s" % (s.sid, e))
        resets = collections.Counter()
        for s in run.sessions:
            for c in s.clients:
                resets.update(c.resets)
        n = len(accepted)
        recov = collections.defaultdict(list)
        for f in run.faults:
            recov[f["kind"]].append(f["recovered_s"])
        self.longest_detail = self._silence_context(longest)
        self.slowest_detail = self._slowest_context(slowest)
        self.summary = {
            "variant": "nats-cluster-3" if cfg.nats_nodes > 1 else "nats-single",
            "chats": n,
            "sessions": len(run.sessions),
            "clients": sum(len(s.clients) for s in run.sessions),
            "faults_injected": sum(fault_counts.values()),
            "faults": dict(sorted(fault_counts.items())),
            "lost": lost,
            "duplicated": duplicated,
            "mismatched": mismatched,
            "gaps": gaps,
            "mixed_attempts": mixed,
            "stored_once_pct": round(100.0 * stored_once / n, 2) if n else None,
            "stored_status": dict(sorted(statuses.items())),
            "stored_error_codes": dict(sorted(error_codes.items())),
            "stored_text_wrong": bad_text,
            "client_never_finished": client_incomplete,
            "longest_silence_s": round(longest[0], 2),
            "orphan_replies": len(orphans),
            "posts_refused": dict(sorted(refused.items())),
            "posts_abandoned": sum(s.abandoned for s in run.sessions),
            "reconnects": sum(max(0, c.connects - 1) for s in run.sessions for c in s.clients),
            "resets": dict(sorted(resets.items())),
            "history_reloads": sum(c.reloads for s in run.sessions for c in s.clients),
            "reply_s": {"p50": _r(_percentile(latencies, 0.5)), "p99": _r(_percentile(latencies, 0.99)),
                        "max": _r(max(latencies) if latencies else None)},
            "fault_recovery_s": {k: max(v) for k, v in sorted(recov.items())},
            "timings": dict(run.timings),
            "seed": cfg.seed,
        }

    def _client_story(self, client, mid):
        """What the client went through around one reply: connections, resets, errors, and the faults."""
        v = client.views.get(mid)
        start = (v.first_at if v and v.first_at else 0) - 3
        lines = [(t, "client: " + w) for t, w in client.log if t >= start and (mid in w or "connected" in w
                                                                                or "stream" in w or "history" in w
                                                                                or "status" in w)]
        lines = lines[:25]
        if lines:
            end = lines[-1][0]
            lines += [(t, "cluster: " + text) for t, text in self.run.cluster.events if start - 10 <= t <= end]
        lines.sort()
        return "".join("\n      %.1fs %s" % (t - _T0, w) for t, w in lines)

    def _slowest_context(self, slowest):
        seconds, client, chat = slowest
        if client is None:
            return ""
        v = client.views.get(chat.mid)
        lines = ["slowest reply %.1fs on %s: %s accepted %.1fs, ended %.1fs after start%s"
                 % (seconds, client.label, chat.mid, chat.accepted_at - _T0, v.first_completed_at - _T0,
                    " (text from the history)" if v.reloaded else "")]
        lines += ["  client  %.1fs: %s" % (t - _T0, w) for t, w in client.log if chat.mid in w][:20]
        lines += ["  log     " + line for line in self.run.cluster.grep_logs(chat.mid, limit=30)]
        return "\n".join(lines)

    def _silence_context(self, longest):
        silence, label, where = longest
        if not where:
            return ""
        a, b, chat = where
        notes = [(t, text) for t, text in self.run.cluster.events if a - 15 <= t <= b + 2]
        client = next((c for s in self.run.sessions for c in s.clients if c.label == label), None)
        clog = [(t, w) for t, w in (client.log if client else []) if a - 5 <= t <= b + 2 or chat.mid in w]
        lines = ["longest silence %.1fs on %s, %.1fs..%.1fs after start, waiting for %s (accepted %.1fs)"
                 % (silence, label, a - _T0, b - _T0, chat.mid, chat.accepted_at - _T0)]
        lines += ["  cluster %.1fs: %s" % (t - _T0, text) for t, text in notes]
        lines += ["  client  %.1fs: %s" % (t - _T0, text) for t, text in clog]
        # What the pods and workers logged about that reply: which of the waits made the silence.
        lines += ["  log     " + line for line in self.run.cluster.grep_logs(chat.mid, limit=40)]
        lines += ["  log     " + line for line in self.run.cluster.grep_logs(chat.sid, limit=60) if chat.mid not in line]
        return "\n".join(lines)

    def failed(self):
        return bool(self.violations)

    def json_line(self):
        return json.dumps(self.summary, sort_keys=False, separators=(",", ":"))

    def describe(self, limit=40):
        out = []
        kinds = collections.Counter(k for k, _ in self.violations)
        if kinds:
            out.append("violations: %s" % dict(kinds))
        for k, text in self.violations[:limit]:
            out.append("  [%s] %s" % (k, text))
        if len(self.violations) > limit:
            out.append("  ... %d more" % (len(self.violations) - limit))
        if self.longest_detail:
            out.append(self.longest_detail)
        if self.slowest_detail:
            out.append(self.slowest_detail)
        return "\n".join(out)


def _r(x):
    return None if x is None else round(x, 2)


def run_chaos(cfg):
    """Runs one chaos run; returns its ChaosReport."""
    return ChaosRun(cfg).execute()
