#!/usr/bin/python3
"""The long chaos run: the local cluster under faults drawn at random for --duration seconds,
many sessions chatting through nginx with browser-like clients; prints one JSON line.

    bench/chaos.py --duration 600 --sessions 20                # single NATS node
    bench/chaos.py --duration 600 --sessions 20 --nats-nodes 3 # 3-node JetStream cluster, JS_REPLICAS=3,
                                                               # NATS nodes also killed (-9) and restarted

Faults: kill -9 of a pod, SIGTERM of a pod, kill -9 of a worker in the middle of replies, restart of
nats-server (one node of the cluster), of redis-server, of PostgreSQL; with --nats-nodes 3 also
kill -9 of one NATS node, restarted 5 s later. Each kind comes once per shuffled round, one fault
at a time, the next after the cluster recovered and a pause of about --fault-interval seconds.

The JSON: chats (accepted, 202), faults_injected and faults (by kind), lost, duplicated,
mismatched, gaps, stored_once_pct, longest_silence_s, and the detail behind them (stored
statuses, resets, reconnects, refused posts, reply times, recovery times, timings). The exit code
is 1 when an invariant failed (the violations are printed on stderr), else 0.

Needs build/chatd and build/chat-worker (CHATD_BIN / CHAT_WORKER_BIN override), nats-server,
redis-server, nginx and PostgreSQL 15 (scripts/install-deps.sh). Standard library only.
"""

import argparse
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "chaos"))

import chaos_harness as ch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load with faults (default 600)")
    ap.add_argument("--sessions", type=int, default=20, help="concurrent chat sessions (default 20)")
    ap.add_argument("--two-device-share", type=float, default=0.5,
                    help="share of sessions with a second device (stream) (default 0.5)")
    ap.add_argument("--nats-nodes", type=int, choices=(1, 3), default=1, help="1, or 3 for a JetStream cluster")
    ap.add_argument("--fault-interval", type=float, default=10.0,
                    help="mean pause between a recovery and the next fault, seconds (default 10)")
    ap.add_argument("--faults", default="",
                    help="comma-separated fault kinds to draw from (default: all for the variant): %s"
                    % ", ".join(ch.CLUSTER_FAULTS))
    ap.add_argument("--settle-timeout", type=float, default=120.0,
                    help="after the load, how long replies may take to be stored and reach every client")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--chunk-delay", default="80ms", help="demo provider pause between chunks (default 80ms)")
    ap.add_argument("--ack-wait", default="5s", help="JS_ACK_WAIT (default 5s)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, data)")
    args = ap.parse_args()

    root_build = os.path.join(ROOT, "build")
    os.environ.setdefault("CHATD_BIN", os.path.join(root_build, "chatd"))
    os.environ.setdefault("CHAT_WORKER_BIN", os.path.join(root_build, "chat-worker"))

    kw = dict(nats_nodes=args.nats_nodes, sessions=args.sessions, two_device_share=args.two_device_share,
              duration=args.duration, fault_interval=args.fault_interval, settle_timeout=args.settle_timeout,
              chunk_delay=args.chunk_delay, ack_wait=args.ack_wait, keep=args.keep)
    if args.seed is not None:
        kw["seed"] = args.seed
    if args.faults:
        kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
        unknown = [k for k in kinds if k not in ch.CLUSTER_FAULTS]
        if unknown or (ch.NATS_NODE_KILL in kinds and args.nats_nodes == 1):
            ap.error("unknown or unusable fault kind(s): %s" % ", ".join(unknown or [ch.NATS_NODE_KILL]))
        kw["fault_kinds"] = kinds
    report = ch.run_chaos(ch.ChaosConfig(**kw))
    if report.failed():
        sys.stderr.write("\n%s\n" % report.describe(limit=60))
        if args.keep:
            sys.stderr.write("(logs kept; see the 'kept:' line above)\n")
    else:
        sys.stderr.write("\n%s\n%s\n" % (report.longest_detail, report.slowest_detail))
    print(report.json_line())
    sys.stdout.flush()
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
