#!/usr/bin/env python3
"""Many idle SSE streams across several chatd pods on one machine, every one fed its session's chunks.

Prints ONE JSON line on stdout (progress on stderr). Starts (tests/e2e/infra.py) a nats-server, a
redis-server and PODS (3) pods pod-1..pod-N with NATS_URL, REDIS_HOST (the Redis registry: every
stream is registered there) and their own SQLite file. Then one `build/loadgen fanout` per pod,
all at once, each opening STREAMS/PODS (50,000 in all) SSE streams on its pod, one session each;
each reads its pod's RSS before the connects and SETTLE (5) s after the last one (memory per
stream), then publishes RATE (5000) chunks/s in all on chat.pod.{pod}.response (round-robin over
its sessions, the chunks of 20-chunk replies) for SECONDS (20) and checks every stream got its
session's chunks once and in order. This sandbox allows 20,000 open files per process: a pod
holds at most 19,000 streams (SERVER_MAX_CONNECTIONS) and so does one loadgen.

Environment: PODS, STREAMS, RATE, SECONDS, SETTLE, LOADGEN, CHATD_BIN, E2E_KEEP_LOGS=1.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import infra  # noqa: E402
from loadgen_check import loadgen_errors  # noqa: E402

LOADGEN = os.environ.get("LOADGEN", os.path.join(ROOT, "build", "loadgen"))


def log(msg):
    sys.stderr.write("pods.py: %s\n" % msg)
    sys.stderr.flush()


def main():
    pods_n = int(os.environ.get("PODS", "3"))
    streams = int(os.environ.get("STREAMS", "50000"))
    rate = float(os.environ.get("RATE", "5000"))
    seconds = float(os.environ.get("SECONDS", "20"))
    settle = float(os.environ.get("SETTLE", "5"))
    per = streams // pods_n
    if per > 19000:
        log("%d streams per pod is over what one process may open here (19,000)" % per)
        return 2
    pod_env = {"LOG_LEVEL": "warn", "SERVER_MAX_CONNECTIONS": "19000", "SERVER_MAX_CONNECTIONS_PER_IP": "0",
               "RATE_LIMIT_STREAMS_PER_USER": "0", "RATE_LIMIT_IP_PER_MINUTE": "0"}
    cl = infra.Cluster(pods=pods_n, workers=0, pod_ids=["pod-%d" % (i + 1) for i in range(pods_n)],
                       pod_env=pod_env, tag="pods", jetstream=False)
    errors, results = [], {}
    tmp = tempfile.mkdtemp(prefix="chatd-pods-bench-")
    try:
        cl.start(timeout=60)
        log("nats :%d, redis :%d, pods %s" % (cl.nats.port, cl.redis.port,
                                              ", ".join("%s :%d" % (p.pod_id, p.port) for p in cl.pods)))
        runs = []
        for p in cl.pods:
            args = [LOADGEN, "fanout", "--target", "chatd", "--port", str(p.port), "--nats-port", str(cl.nats.port),
                    "--pod", p.pod_id, "--sessions", str(per), "--rate", str(rate / pods_n), "--seconds",
                    str(seconds), "--warmup", "2", "--settle", str(settle), "--threads", "1",
                    "--pid", str(p.proc.pid), "--prefix", "p%s_%d" % (p.pod_id.replace("-", ""), int(time.time()))]
            out = open(os.path.join(tmp, "%s.json" % p.pod_id), "wb")
            err = open(os.path.join(tmp, "%s.err" % p.pod_id), "wb")
            runs.append((p, infra.popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL), out, err))
        for p, proc, out, err in runs:
            try:
                proc.wait(seconds + settle + 300)
            except subprocess.TimeoutExpired:
                proc.kill()
                errors.append("loadgen for %s did not finish; killed" % p.pod_id)
            out.close()
            err.close()
            try:
                with open(out.name) as f:
                    results[p.pod_id] = json.loads(f.read().strip().splitlines()[-1])
            except (ValueError, IndexError):
                with open(err.name) as f:
                    log("loadgen for %s: %s" % (p.pod_id, f.read()[-2000:]))
                errors.append("loadgen for %s printed no JSON (status %s)" % (p.pod_id, proc.returncode))
                results[p.pod_id] = {}
            errors += loadgen_errors(p.pod_id, results[p.pod_id])
        alive = {p.pod_id: p.alive() for p in cl.pods}
        errors += ["%s exited during the run" % k for k, v in alive.items() if not v]
    finally:
        cl.cleanup()
        subprocess.run(["rm", "-rf", tmp])
    up = sum(r.get("streams_up", 0) for r in results.values())
    grown = [r.get("server_rss_connected_kib", -1) - r.get("server_rss_before_kib", 0) for r in results.values()]
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
           "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
           "pods": pods_n, "streams_requested": per * pods_n, "streams_up": up,
           "rss_per_stream_bytes": round(sum(grown) * 1024 / up) if up and min(grown) >= 0 else None,
           "rate_requested": rate,
           "chunk_events_per_sec": round(sum(r.get("chunk_events_per_sec", 0) for r in results.values()), 1),
           "latency_p99_ms_worst_pod": max((r.get("latency_p99_ms") or 0) for r in results.values()) if results else None,
           "published": sum((r.get("integrity") or {}).get("published", 0) for r in results.values()),
           "delivered": sum((r.get("integrity") or {}).get("delivered", 0) for r in results.values()),
           "errors": errors, "per_pod": results}
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
