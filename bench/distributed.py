#!/usr/bin/env python3
"""Distributed-path benchmark: two chatd pods + chat-worker(s) over a real nats-server and redis-server.

Prints ONE JSON line on stdout (progress on stderr). For each scenario it starts a fresh cluster
(tests/e2e/infra.py: nats-server, redis-server, pods pod-1 and pod-2 with NATS_URL + REDIS_HOST and
their own SQLite file via DB_PATH, N chat-worker processes), then runs two `build/loadgen stream`
processes at once, one per pod (SESSIONS/2 sessions each: the SSE stream and the POSTs of a session
go to the same pod), and reports:

  chunk_events_per_sec      sum over both loadgens of chunk events received in the measured window
  latency p50/p99 (ms)      per pod, as loadgen measures it: client CLOCK_REALTIME at receipt - the
                            chunk's `timestamp` (set by chat-worker right before it publishes); the
                            combined figure is the larger of the two pods' values (no merged histogram)
  registry look-ups         redis-server INFO commandstats calls of SMEMBERS and MGET over the same
                            window (only the worker's RedisRegistry::live_pods issues them), per second
                            and per delivered chunk
  cpu_percent               per process over the window, and `others` = machine busy - ours
  integrity                 loadgen's checks, error/warn lines of every log, processes alive, and the
                            stored rows (user + assistant messages of both pods' SQLite files after a
                            graceful stop) against the chats loadgen got 202 for

Scenarios (SCENARIOS, default "full1 full2 rate1"):
  full1  1 worker,  WORKER_DEMO_CHUNK_DELAY=0
  full2  2 workers, WORKER_DEMO_CHUNK_DELAY=0
  rate1  1 worker,  WORKER_DEMO_CHUNK_DELAY=RATE_DELAY (100ms), first chats spread over STAGGER (3) s
  rate2  2 workers, the same
  full1core, rate1core  full1 and rate1 on core NATS (NATS_JETSTREAM=false: no work queue stream, no
         chunk log): run beside full1/rate1, the difference is the cost of JetStream on the live path
Environment: SESSIONS (1000), SECONDS (15), WARMUP (3), RATE_DELAY, STAGGER, LOADGEN, CHATD_BIN,
CHAT_WORKER_BIN, QUIET_WAIT (60 s at most waiting for a quiet machine), QUIET_MAX (25 % of a core),
BUS_ENV (settings for every pod and worker, e.g. "NATS_SEND_ASAP=false"),
E2E_KEEP_LOGS=1 (keep the cluster's temp dirs).

Every wait is bounded; everything listens on 127.0.0.1; every process started here is killed at the
end (also on failure: infra registers each child and kills it at exit).
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import infra  # noqa: E402
from loadgen_check import loadgen_errors  # noqa: E402
from machine import HZ, loadavg, machine_busy, problem_lines, wait_quiet  # noqa: E402


class QuietWorker(infra.WorkerProcess):
    """chat-worker at LOG_LEVEL=warn (info logs two lines per reply): it then never logs
    worker_started, so readiness is its queue subscription in nats-server's /connz, which
    Cluster.wait_workers_subscribed checks anyway."""

    def start(self, timeout=15.0):
        self._spawn([infra.worker_bin()], env=self.build_env())
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise infra.StartError("chat-worker exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
        return self


infra.WorkerProcess = QuietWorker  # Cluster.add_worker looks the class up in infra
LOADGEN = os.environ.get("LOADGEN") or os.path.join(ROOT, "build", "loadgen")


def log(msg):
    sys.stderr.write("distributed.py: %s\n" % msg)
    sys.stderr.flush()


def proc_cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, ValueError, IndexError):
        return None


def commandstats(rc):
    out = rc.execute("INFO", "commandstats")
    if isinstance(out, bytes):
        out = out.decode()
    calls = {}
    for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", out):
        calls[m.group(1)] = int(m.group(2))
    return calls


def count_rows(db_path):
    c = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=10)
    try:
        rows = dict(c.execute("SELECT role, count(*) FROM messages GROUP BY role").fetchall())
        status = dict(c.execute("SELECT status, count(*) FROM messages WHERE role='assistant' GROUP BY status")
                      .fetchall())
    finally:
        c.close()
    return {"user": rows.get("user", 0), "assistant": rows.get("assistant", 0), "assistant_status": status}


def worst_of_pods(per_pod, key):
    """The larger of the pods' values; None when a pod has none (an empty sample is no figure)."""
    values = [j.get(key) for j in per_pod.values()]
    return None if not values or None in values else max(values)


def run_scenario(name, workers, delay, stagger, sessions, seconds, warmup, jetstream=True):
    errors = []
    quiet = wait_quiet(log)
    if quiet:
        errors.append(quiet)
    bus_env = dict(kv.split("=", 1) for kv in os.environ.get("BUS_ENV", "").split())
    worker_env = {"LOG_LEVEL": "warn", "WORKER_DEMO_CHUNK_DELAY": delay, **bus_env}
    pod_env = {"LOG_LEVEL": "warn", **bus_env}
    cl = infra.Cluster(pods=2, workers=workers, pod_ids=["pod-1", "pod-2"], pod_env=pod_env,
                       worker_env=worker_env, tag=name, jetstream=jetstream)
    lgs = []
    tmp = tempfile.mkdtemp(prefix="chatd-dist-bench-")
    res = {"scenario": name, "workers": workers, "jetstream": jetstream, "worker_env": worker_env, "pod_env": pod_env,
           "sessions": sessions, "db": "SQLite per pod (DB_PATH in each pod's temp dir)"}
    try:
        cl.start(timeout=60)
        rc = cl.redis_client()
        pods = cl.pods
        log("%s: nats :%d, redis :%d, pods %s, %d worker(s) (delay %s)" % (
            name, cl.nats.port, cl.redis.port, ", ".join("%s :%d" % (p.pod_id, p.port) for p in pods), workers,
            delay))
        per = sessions // len(pods)
        for i, p in enumerate(pods):
            args = [LOADGEN, "stream", "--port", str(p.port), "--sessions", str(per), "--seconds", str(seconds),
                    "--warmup", str(warmup + stagger), "--threads", "1", "--pid", str(p.proc.pid),
                    "--prefix", "%s_%s_%d" % (name, p.pod_id.replace("-", ""), int(time.time()))]
            if stagger:
                args += ["--stagger", str(stagger)]
            out = open(os.path.join(tmp, "loadgen-%s.json" % p.pod_id), "wb")
            err = open(os.path.join(tmp, "loadgen-%s.err" % p.pod_id), "wb")
            lgs.append((p, infra.popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL), out, err))
        # Both loadgens print "stream: N/M SSE connected; posting ..." when their run starts.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            started = 0
            for p, proc, out, err in lgs:
                with open(err.name, "rb") as f:
                    if b"posting for" in f.read():
                        started += 1
                if proc.poll() is not None:
                    raise RuntimeError("loadgen for %s exited early (%s)" % (p.pod_id, proc.returncode))
            if started == len(lgs):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("loadgens did not start posting within 150 s")
        time.sleep(warmup + stagger)
        ours = {"nats": cl.nats.pid, "redis": cl.redis.pid}
        for p in pods:
            ours[p.pod_id] = p.proc.pid
        for i, w in enumerate(cl.workers):
            ours["worker-%d" % (i + 1)] = w.pid
        for p, proc, out, err in lgs:
            ours["loadgen-%s" % p.pod_id] = proc.pid
        cs0, t0, m0 = commandstats(rc), time.monotonic(), machine_busy()
        c0 = {k: proc_cpu(v) for k, v in ours.items()}
        load0 = loadavg()
        time.sleep(seconds - 0.2)  # inside both loadgens' windows (they start within ~0.1 s of each other)
        cs1, t1, m1 = commandstats(rc), time.monotonic(), machine_busy()
        c1 = {k: proc_cpu(v) for k, v in ours.items()}
        win = t1 - t0
        cpu = {k: round((c1[k] - c0[k]) / win * 100, 1) for k in ours if c0[k] is not None and c1[k] is not None}
        cpu["machine"] = round((m1 - m0) / win * 100, 1)
        cpu["others"] = round(cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"), 1)
        lookups = {c: cs1.get(c, 0) - cs0.get(c, 0) for c in ("smembers", "mget")}
        for p, proc, out, err in lgs:
            try:
                proc.wait(seconds + 120)
            except subprocess.TimeoutExpired:
                proc.kill()
                errors.append("loadgen for %s did not finish; killed" % p.pod_id)
        per_pod = {}
        for p, proc, out, err in lgs:
            out.close()
            err.close()
            try:
                with open(out.name) as f:
                    per_pod[p.pod_id] = json.loads(f.read().strip().splitlines()[-1])
            except (ValueError, IndexError):
                errors.append("loadgen for %s printed no JSON (status %s)" % (p.pod_id, proc.returncode))
                per_pod[p.pod_id] = {}
        health = {}
        for p in pods:
            try:
                health[p.pod_id] = infra.http_request(p.port, "GET", "/health", timeout=3).json()
            except Exception as e:  # noqa: BLE001
                health[p.pod_id] = "unreachable: %r" % e
                errors.append("%s /health unreachable after the run" % p.pod_id)
        alive = {p.pod_id: p.alive() for p in pods}
        alive.update({"worker-%d" % (i + 1): w.alive() for i, w in enumerate(cl.workers)})
        for k, v in alive.items():
            if not v:
                errors.append("%s exited during the run" % k)
        stop_problems = cl.stop_gracefully()
        errors += stop_problems
        logs = {}
        for proc in cl.processes():
            n = getattr(proc, "pod_id", None) or proc.name
            if n in ("nats", "redis"):
                continue
            cnt, last = problem_lines(proc.log_path)
            logs[n] = {"error_warn_lines": cnt, "last": last}
        rows = {p.pod_id: count_rows(p.db_path) for p in pods}

        chunks = sum(j.get("chunk_events_window", 0) for j in per_pod.values())
        rate = sum(j.get("chunk_events_per_sec", 0) for j in per_pod.values())
        posts_ok = sum(j.get("posts_ok", 0) for j in per_pod.values())
        user_rows = sum(r["user"] for r in rows.values())
        asst_rows = sum(r["assistant"] for r in rows.values())
        integ = {}
        for j in per_pod.values():
            for k, v in (j.get("integrity") or {}).items():
                if isinstance(v, (int, float)) and k != "drain_seconds":
                    integ[k] = integ.get(k, 0) + v
        ev = {}
        for j in per_pod.values():
            for k, v in (j.get("events") or {}).items():
                ev[k] = ev.get(k, 0) + v
        res.update({
            "loadavg_at_window_start": load0,
            "window_seconds": round(win, 2),
            "chunk_events_per_sec": round(rate, 1),
            "chunk_events_window": chunks,
            "messages_per_sec": round(sum(j.get("messages_per_sec", 0) for j in per_pod.values()), 1),
            "latency_ms": {pid: {"p50": j.get("latency_p50_ms"), "p99": j.get("latency_p99_ms"),
                                 "p999": j.get("latency_p999_ms"), "max": j.get("latency_max_ms"),
                                 "rate": j.get("chunk_events_per_sec")} for pid, j in per_pod.items()},
            "latency_p50_ms_max_of_pods": worst_of_pods(per_pod, "latency_p50_ms"),
            "latency_p99_ms_max_of_pods": worst_of_pods(per_pod, "latency_p99_ms"),
            "registry": {"smembers_calls": lookups["smembers"], "mget_calls": lookups["mget"],
                         "lookups_per_sec": round(lookups["smembers"] / win, 1),
                         "chunks_per_sec_same_window": round(rate, 1),
                         "lookups_per_chunk": round(lookups["smembers"] / win / rate, 4) if rate else None},
            "cpu_percent": cpu,
            "integrity": integ,
            "events": ev,
            "posts_ok": posts_ok,
            "stored": {"per_pod": rows, "user": user_rows, "assistant": asst_rows,
                       "user_missing": posts_ok - user_rows, "assistant_missing": posts_ok - asst_rows},
            "health_after": health,
            "logs": logs,
            "problems": {pid: j.get("problems", []) for pid, j in per_pod.items()},
        })
        for pid, j in per_pod.items():
            errors += loadgen_errors("%s %s" % (name, pid), j)
        if posts_ok != asst_rows or posts_ok != user_rows:
            errors.append("stored rows differ from accepted chats: posts_ok %d, user %d, assistant %d" % (
                posts_ok, user_rows, asst_rows))
    except Exception as e:  # noqa: BLE001
        errors.append("%s: %r" % (name, e))
        log("%s failed: %r\n%s" % (name, e, cl.dump_logs(3000)))
    finally:
        for p, proc, out, err in lgs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        cl.cleanup()
        if os.environ.get("E2E_KEEP_LOGS") != "1":
            subprocess.run(["rm", "-rf", tmp])
    res["errors"] = errors
    log(json.dumps({k: res.get(k) for k in ("scenario", "chunk_events_per_sec", "latency_ms", "registry",
                                            "cpu_percent", "stored", "errors")}))
    return res


def main():
    sessions = int(os.environ.get("SESSIONS", "1000"))
    seconds = float(os.environ.get("SECONDS", "15"))
    warmup = float(os.environ.get("WARMUP", "3"))
    rate_delay = os.environ.get("RATE_DELAY", "100ms")
    stagger = float(os.environ.get("STAGGER", "3"))
    table = {"full1": (1, "0", 0.0), "full2": (2, "0", 0.0), "rate1": (1, rate_delay, stagger),
             "rate2": (2, rate_delay, stagger), "full1core": (1, "0", 0.0, False),
             "rate1core": (1, rate_delay, stagger, False)}
    names = os.environ.get("SCENARIOS", "full1 full2 rate1").split()
    for n in names:
        if n not in table:
            log("unknown scenario %s" % n)
            return 2
    if not os.access(LOADGEN, os.X_OK):
        log("no loadgen at %s" % LOADGEN)
        return 1
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_at_start": loadavg(),
           "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
           "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
           "chatd": infra.harness.chatd_bin(), "worker": infra.worker_bin(), "scenarios": {}}
    for n in names:
        w, d, s, *js = table[n]
        out["scenarios"][n] = run_scenario(n, w, d, s, sessions, seconds, warmup, *js)
    out["loadavg_at_end"] = loadavg()
    out["errors"] = [e for n in names for e in out["scenarios"][n]["errors"]]
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
