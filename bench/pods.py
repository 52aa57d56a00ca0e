#!/usr/bin/env python3
"""Many idle SSE streams across several chatd pods on one machine, every one fed its session's chunks.

Prints ONE JSON line on stdout (progress on stderr).

VIA=pods (default): tests/e2e/infra.py starts a nats-server, a redis-server and PODS (3) pods
pod-1..pod-N with NATS_URL, REDIS_HOST (the Redis registry: every stream is registered there) and
their own SQLite file; one `build/loadgen fanout` per pod opens STREAMS/PODS streams on it.
VIA=nginx: scripts/cluster.sh (in a temp dir, on free ports, no workers, 8 nginx workers) starts
the local cluster (nats-server with the role logins, redis-server, PostgreSQL, PODS pods behind
nginx); the loadgens open every stream through nginx's one port (least_conn picks the pod), from
many addresses of 127.1.0.0/16 (one address has ~28,000 ports for one server port, and nginx
allows 256 connections per address), and learn each stream's pod from its `connected` event.

Either way, with every stream up the pods' (and nginx's) memory is read against the reading
before the first connect, then RATE (5000) chunks/s in all are published on
chat.pod.{pod}.response (as chat-worker does) for SECONDS (20): every session gets a reply of
REPLY_CHUNKS (2) chunks, ACTIVE (100) sessions per loadgen at a time taking theirs in turn (a
reply streams within a moment, as a real one does; ACTIVE=0 is plain round-robin over all the
sessions, which at 5,000/s puts a reply's chunks 10 s apart and makes every reply look stalled),
and every stream must get its session's chunks once and in order. The streams have
CONNECT_SECONDS (300) to come up (`connect_seconds_worst`: the slowest loadgen's). This sandbox
allows 20,000 open files per process: a pod holds at most 19,000 streams, and so does a loadgen.

Environment: VIA, PODS, STREAMS (50000), RATE, SECONDS, REPLY_CHUNKS, ACTIVE, CONNECT_SECONDS,
LOADGEN, CHATD_BIN, E2E_KEEP_LOGS=1.
"""

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import infra  # noqa: E402
from loadgen_check import loadgen_errors  # noqa: E402

LOADGEN = os.environ.get("LOADGEN", os.path.join(ROOT, "build", "loadgen"))
POD_LIMITS = {"SERVER_MAX_CONNECTIONS": "19000", "SERVER_MAX_CONNECTIONS_PER_IP": "0",
              "RATE_LIMIT_STREAMS_PER_USER": "0", "RATE_LIMIT_IP_PER_MINUTE": "0", "LOG_LEVEL": "warn"}
CONNECT_SECONDS = float(os.environ.get("CONNECT_SECONDS", "300"))
REPLY_CHUNKS = int(os.environ.get("REPLY_CHUNKS", "2"))
ACTIVE = int(os.environ.get("ACTIVE", "100"))
SOURCE_IPS = 400  # through nginx: 125 streams per address, under its 256 per address


def log(msg):
    sys.stderr.write("pods.py: %s\n" % msg)
    sys.stderr.flush()


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_base(count):
    """A port p with p+1..p+count all free (the cluster's pods), below the ephemeral range that the
    streams' own ports come from."""
    for _ in range(200):
        base = random.randrange(20000, 32000)
        if all(port_free(base + i) for i in range(1, count + 1)):
            return base
    raise RuntimeError("no run of %d free ports" % count)


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def run_loadgens(targets, per, rate, seconds, tmp):
    """targets: [(name, port, extra args)]. Starts them at once; returns [(name, proc, out, err)]."""
    runs = []
    for name, port, extra in targets:
        args = [LOADGEN, "fanout", "--target", "chatd", "--port", str(port), "--sessions", str(per),
                "--rate", str(rate / len(targets)), "--seconds", str(seconds), "--warmup", "2", "--settle", "5",
                "--connect-seconds", str(CONNECT_SECONDS), "--chunks-per-message", str(REPLY_CHUNKS),
                "--active", str(ACTIVE),
                "--threads", "1", "--prefix", "p%s_%d" % (name.replace("-", ""), int(time.time()))] + extra
        out = open(os.path.join(tmp, "%s.json" % name), "wb")
        err = open(os.path.join(tmp, "%s.err" % name), "wb")
        runs.append((name, infra.popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL), out, err))
    return runs


def wait_all_up(runs, timeout):
    """Until every loadgen says its streams are up (it then settles 5 s and starts publishing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = 0
        for name, proc, out, err in runs:
            with open(err.name, "rb") as f:
                up += b"streams up" in f.read()
            if proc.poll() is not None:
                raise RuntimeError("loadgen %s exited early (%s)" % (name, proc.returncode))
        if up == len(runs):
            return
        time.sleep(0.2)
    raise RuntimeError("the streams were not all up within %d s" % timeout)


def collect(runs, seconds, errors):
    results = {}
    for name, proc, out, err in runs:
        try:
            proc.wait(seconds + 300)
        except subprocess.TimeoutExpired:
            proc.kill()
            errors.append("loadgen %s did not finish; killed" % name)
        out.close()
        err.close()
        try:
            with open(out.name) as f:
                results[name] = json.loads(f.read().strip().splitlines()[-1])
        except (ValueError, IndexError):
            with open(err.name) as f:
                log("loadgen %s: %s" % (name, f.read()[-2000:]))
            errors.append("loadgen %s printed no JSON (status %s)" % (name, proc.returncode))
            results[name] = {}
        errors += loadgen_errors(name, results[name])
    return results


def via_pods(pods_n, per, rate, seconds, tmp, errors):
    cl = infra.Cluster(pods=pods_n, workers=0, pod_ids=["pod-%d" % (i + 1) for i in range(pods_n)],
                       pod_env=POD_LIMITS, tag="pods", jetstream=False)
    try:
        cl.start(timeout=60)
        log("nats :%d, redis :%d, pods %s" % (cl.nats.port, cl.redis.port,
                                              ", ".join("%s :%d" % (p.pod_id, p.port) for p in cl.pods)))
        pids = {p.pod_id: p.proc.pid for p in cl.pods}
        before = {k: rss_kib([v]) for k, v in pids.items()}
        runs = run_loadgens([(p.pod_id, p.port, ["--nats-port", str(cl.nats.port), "--pod", p.pod_id])
                             for p in cl.pods], per, rate, seconds, tmp)
        wait_all_up(runs, CONNECT_SECONDS + 60)
        grown = {k: rss_kib([v]) - before[k] for k, v in pids.items()}
        results = collect(runs, seconds, errors)
        errors += ["%s exited during the run" % p.pod_id for p in cl.pods if not p.alive()]
        return results, grown
    finally:
        cl.cleanup()


def via_nginx(pods_n, per, rate, seconds, tmp, errors):
    run_dir = os.path.join(tmp, "cluster")
    http, nats, redis, pg = free_port(), free_port(), free_port(), free_port()
    env = dict(os.environ, CLUSTER_DIR=run_dir, CLUSTER_HTTP_PORT=str(http), CLUSTER_POD_BASE_PORT=str(free_base(pods_n)),
               CLUSTER_PODS=str(pods_n), CLUSTER_WORKERS="0", CLUSTER_NATS_PORT=str(nats), CLUSTER_REDIS_PORT=str(redis),
               CLUSTER_PG_PORT=str(pg), CLUSTER_NGINX_WORKERS="8",
               CLUSTER_POD_ENV=" ".join("%s=%s" % kv for kv in POD_LIMITS.items()))
    cluster = os.path.join(ROOT, "scripts", "cluster.sh")
    up = subprocess.run([cluster, "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        if up.returncode != 0:
            raise RuntimeError("cluster.sh up failed:\n%s" % up.stderr[-3000:])
        with open(os.path.join(run_dir, "secrets.env")) as f:
            secrets = dict(line.strip().split("=", 1) for line in f if "=" in line)
        url = "nats://chat-worker:%s@127.0.0.1:%d" % (secrets["CHAT_NATS_WORKER_PASSWORD"], nats)
        pids = {"pod-%d" % (i + 1): int(open(os.path.join(run_dir, "pod-%d.pid" % (i + 1))).read()) for i in range(pods_n)}
        master = int(open(os.path.join(run_dir, "nginx.pid")).read())
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                                  text=True).stdout.split()]
        pids["nginx"] = None
        before = {k: rss_kib([v]) for k, v in pids.items() if v}
        before["nginx"] = rss_kib([master] + workers)
        share = SOURCE_IPS // pods_n
        # nginx gives a pod 2 s to accept (proxy_connect_timeout): connects go in gently.
        runs = run_loadgens([("lb-%d" % i, http, ["--nats-url", url, "--pod", "auto", "--source-ips", str(share),
                                                  "--source-offset", str(i * share), "--batch", "16"])
                             for i in range(pods_n)],
                            per, rate, seconds, tmp)
        wait_all_up(runs, CONNECT_SECONDS + 60)
        grown = {k: rss_kib([v]) - before[k] for k, v in pids.items() if v}
        grown["nginx"] = rss_kib([master] + workers) - before["nginx"]
        results = collect(runs, seconds, errors)
        return results, grown
    finally:
        subprocess.run([cluster, "down"], env=env, capture_output=True, timeout=120)


def main():
    via = os.environ.get("VIA", "pods")
    pods_n = int(os.environ.get("PODS", "3"))
    streams = int(os.environ.get("STREAMS", "50000"))
    rate = float(os.environ.get("RATE", "5000"))
    seconds = float(os.environ.get("SECONDS", "20"))
    per = streams // pods_n
    if per > 19000:
        log("%d streams per pod is over what one process may open here (19,000)" % per)
        return 2
    errors = []
    tmp = tempfile.mkdtemp(prefix="chatd-pods-bench-")
    os.chmod(tmp, 0o755)  # cluster.sh runs PostgreSQL as the postgres user, inside it
    try:
        results, grown = (via_nginx if via == "nginx" else via_pods)(pods_n, per, rate, seconds, tmp, errors)
    except Exception as e:  # noqa: BLE001
        errors.append("run failed: %s" % e)
        results, grown = {}, {}
    finally:
        if not os.environ.get("E2E_KEEP_LOGS"):
            subprocess.run(["rm", "-rf", tmp])
    up = sum(r.get("streams_up", 0) for r in results.values())
    pod_growth = sum(v for k, v in grown.items() if k.startswith("pod-"))
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
           "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
           "via": via, "pods": pods_n, "streams_requested": per * pods_n, "streams_up": up,
           "connect_seconds_worst": max((r.get("connect_seconds") or 0) for r in results.values()) if results else None,
           "pods_rss_per_stream_bytes": round(pod_growth * 1024 / up) if up else None,
           "nginx_rss_per_stream_bytes": round(grown["nginx"] * 1024 / up) if up and "nginx" in grown else None,
           "rss_growth_kib": grown, "rate_requested": rate,
           "reply_chunks": REPLY_CHUNKS, "active_per_loadgen": ACTIVE,
           "chunk_events_per_sec": round(sum(r.get("chunk_events_per_sec", 0) for r in results.values()), 1),
           "latency_p50_ms_worst": max((r.get("latency_p50_ms") or 0) for r in results.values()) if results else None,
           "latency_p99_ms_worst": max((r.get("latency_p99_ms") or 0) for r in results.values()) if results else None,
           "published": sum((r.get("integrity") or {}).get("published", 0) for r in results.values()),
           "delivered": sum((r.get("integrity") or {}).get("delivered", 0) for r in results.values()),
           "streams_without_chunks": sum((r.get("integrity") or {}).get("streams_without_chunks", 0)
                                         for r in results.values()),
           "errors": errors, "loadgens": results}
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
