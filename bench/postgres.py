#!/usr/bin/env python3
"""POST /api/chat with PostgreSQL compared with SQLite: ONE JSON line on stdout (progress on stderr).

Starts one PostgreSQL 15 (tests/e2e/pg_infra.py: initdb in a temp dir, 127.0.0.1 on a free port,
fsync=off, run as the `postgres` user when we are root) and then, ROUNDS times in the order
sqlite, postgres (so that drift of the machine hits both alike), a fresh chatd in its embedded mode
(in-process bus and demo worker, in-memory registry) with the settings of bench/run.sh's `post`
scenario (WORKER_DEMO_WORDS_PER_CHUNK=1000 WORKER_DEMO_CHUNK_DELAY=0: every chat is answered with a
one-chunk reply at full speed, which is stored too), LOG_LEVEL=warn, either with a fresh DB_PATH
(SQLite) or DB_HOST... pointing at a fresh PostgreSQL database. Against each it runs
`build/loadgen post --concurrency C --seconds S --warmup W` and reports:

  post_rps, latency p50/p99/max      from loadgen (accepted chats per second: 202 with a message_id)
  stored_messages_per_sec            rows of `messages` (user + assistant) counted at the start and
                                     the end of loadgen's measured window, / the time between counts
  stored_after_drain                 rows once the writes have settled (bounded wait) vs. the 202s:
                                     every accepted chat must have its user and its assistant row
  cpu_percent                        chatd, postgres (all its processes), loadgen, others
  ratios                             postgres / sqlite of the medians over the rounds

Environment: ROUNDS (2), SECONDS (10), WARMUP (3), CONCURRENCY (64), DB_POOL_SIZE (unset: chatd's
default), LOADGEN, CHATD_BIN, CHAT_PG_BIN, QUIET_WAIT (60), QUIET_MAX (25), E2E_KEEP_LOGS=1.
Every wait is bounded; only 127.0.0.1; every process started here is stopped at the end (also on
failure: pg_infra and infra register their children and stop them at exit).
"""

import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import infra  # noqa: E402
from loadgen_check import loadgen_errors  # noqa: E402
from machine import HZ, loadavg, machine_busy, problem_lines, wait_quiet  # noqa: E402
import pg_infra  # noqa: E402

LOADGEN = os.environ.get("LOADGEN") or os.path.join(ROOT, "build", "loadgen")


def log(msg):
    sys.stderr.write("postgres.py: %s\n" % msg)
    sys.stderr.flush()


def stat_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / HZ  # ppid, cpu seconds
    except (OSError, ValueError, IndexError):
        return None, None


def tree_cpu(root_pid):
    """CPU seconds of a process and its direct children (PostgreSQL's backends)."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        ppid, cpu = stat_of(pid)
        if cpu is not None and (pid == root_pid or ppid == root_pid):
            total += cpu
    return total


def run_one(backend, rnd, pg, seconds, warmup, concurrency):
    errors = []
    quiet = wait_quiet(log)
    if quiet:
        errors.append(quiet)
    env = {"LOG_LEVEL": "warn", "WORKER_DEMO_WORDS_PER_CHUNK": "1000", "WORKER_DEMO_CHUNK_DELAY": "0"}
    if os.environ.get("DB_POOL_SIZE"):
        env["DB_POOL_SIZE"] = os.environ["DB_POOL_SIZE"]
    db = None
    if backend == "postgres":
        db = pg.create_database()
        env.update(pg.chatd_env(db))
    srv = infra.PodServer("bench-%s-%d" % (backend, rnd), env=env)

    def count():
        if backend == "postgres":
            rows = pg.query(db, "SELECT role, count(*) AS n FROM messages GROUP BY role")
            return {r["role"]: r["n"] for r in rows}
        c = sqlite3.connect("file:%s?mode=ro" % srv.db_path, uri=True, timeout=10)
        try:
            return dict(c.execute("SELECT role, count(*) FROM messages GROUP BY role").fetchall())
        finally:
            c.close()

    def total(d):
        return d.get("user", 0) + d.get("assistant", 0)

    res = {"backend": backend, "round": rnd, "chatd_env": {k: ("***" if k == "DB_PASSWORD" else v)
                                                             for k, v in env.items()}}
    lg = None
    try:
        srv.start(timeout=60)
        pid = srv.proc.pid
        rows0 = count()
        args = [LOADGEN, "post", "--port", str(srv.port), "--seconds", str(seconds), "--warmup", str(warmup),
                "--concurrency", str(concurrency), "--pid", str(pid)]
        log("%s round %d: chatd :%d; %s" % (backend, rnd, srv.port, " ".join(args[1:])))
        t_launch = time.monotonic()
        lg = infra.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        # The window of loadgen's post mode starts `warmup` s after it starts (its first step).
        time.sleep(max(0.0, t_launch + warmup - time.monotonic()))
        c0 = {"chatd": stat_of(pid)[1], "loadgen": stat_of(lg.pid)[1]}
        if pg:
            c0["postgres"] = tree_cpu(pg.proc.pid)
        m0, t0, load0 = machine_busy(), time.monotonic(), loadavg()
        n0 = count()
        time.sleep(max(0.0, t_launch + warmup + seconds - time.monotonic()))
        n1 = count()
        t1 = time.monotonic()
        c1 = {"chatd": stat_of(pid)[1], "loadgen": stat_of(lg.pid)[1]}
        if pg:
            c1["postgres"] = tree_cpu(pg.proc.pid)
        m1 = machine_busy()
        try:
            out, err = lg.communicate(timeout=seconds + warmup + 60)
        except subprocess.TimeoutExpired:
            lg.kill()
            out, err = lg.communicate(timeout=10)
            errors.append("loadgen did not finish; killed")
        try:
            j = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            j = {}
            errors.append("loadgen printed no JSON (status %s): %s" % (lg.returncode, err.decode()[-500:]))
        # Writes settle: the last replies are stored a moment after their 202 (bounded wait).
        settle_deadline = time.monotonic() + 15
        last = count()
        while time.monotonic() < settle_deadline:
            time.sleep(0.5)
            now = count()
            if now == last and now.get("assistant", 0) >= j.get("requests_ok", 0):
                break
            last = now
        rows_end = count()
        win = t1 - t0
        cpu = {k: round((c1[k] - c0[k]) / win * 100, 1) for k in c0 if c0[k] is not None and c1[k] is not None}
        cpu["machine"] = round((m1 - m0) / win * 100, 1)
        cpu["others"] = round(cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"), 1)
        alive = srv.alive()
        if not alive:
            errors.append("chatd exited during the run (status %s)" % srv.proc.returncode)
        try:
            health = infra.http_request(srv.port, "GET", "/health", timeout=3).json()
        except Exception as e:  # noqa: BLE001
            health = "unreachable: %r" % e
        code = srv.stop(timeout=20)
        if code != 0:
            errors.append("chatd exit status %s after SIGTERM" % code)
        nlog, last_lines = problem_lines(srv.log_path)
        ok = j.get("requests_ok", 0)
        stored_user = rows_end.get("user", 0) - rows0.get("user", 0)
        stored_asst = rows_end.get("assistant", 0) - rows0.get("assistant", 0)
        if stored_user != ok or stored_asst != ok:
            errors.append("stored rows differ from accepted chats: 202s %d, user rows %d, assistant rows %d"
                          % (ok, stored_user, stored_asst))
        errors += loadgen_errors("loadgen", j)
        res.update({
            "loadavg_at_window_start": load0,
            "post_rps": j.get("post_rps"),
            "latency_p50_ms": j.get("latency_p50_ms"),
            "latency_p99_ms": j.get("latency_p99_ms"),
            "latency_max_ms": j.get("latency_max_ms"),
            "stored_messages_per_sec": round((total(n1) - total(n0)) / win, 1),
            "stored_window": {"seconds": round(win, 2), "user": n1.get("user", 0) - n0.get("user", 0),
                              "assistant": n1.get("assistant", 0) - n0.get("assistant", 0)},
            "accepted_total": ok,
            "stored_after_drain": {"user": stored_user, "assistant": stored_asst},
            "cpu_percent": cpu,
            "loadgen_cpu_percent": j.get("cpu_percent"),
            "chatd_log_error_warn_lines": nlog, "chatd_log_last": last_lines,
            "health_after": health,
            "loadgen_problems": j.get("problems", []),
        })
    except Exception as e:  # noqa: BLE001
        errors.append("%s round %d: %r" % (backend, rnd, e))
        log("%s round %d failed: %r\n%s" % (backend, rnd, e, srv.log(3000)))
    finally:
        if lg is not None and lg.poll() is None:
            lg.kill()
            lg.wait(10)
        srv.cleanup()
    res["errors"] = errors
    log(json.dumps({k: res.get(k) for k in ("backend", "round", "post_rps", "latency_p50_ms", "latency_p99_ms",
                                            "stored_messages_per_sec", "accepted_total", "stored_after_drain",
                                            "cpu_percent", "errors")}))
    return res


def main():
    rounds = int(os.environ.get("ROUNDS", "2"))
    seconds = float(os.environ.get("SECONDS", "10"))
    warmup = float(os.environ.get("WARMUP", "3"))
    concurrency = int(os.environ.get("CONCURRENCY", "64"))
    if not os.access(LOADGEN, os.X_OK):
        log("no loadgen at %s" % LOADGEN)
        return 1
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_at_start": loadavg(),
           "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
           "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
           "chatd": infra.harness.chatd_bin(), "concurrency": concurrency, "seconds": seconds, "warmup": warmup}
    pg = pg_infra.PostgresServer(name="bench-pg")
    runs = []
    try:
        pg.start()
        ver = pg.scalar("postgres", "SELECT current_setting('server_version') AS v")
        out["postgres"] = {"version": ver, "port": pg.port,
                           "settings": "fsync=off full_page_writes=off synchronous_commit=on shared_buffers=32MB "
                                       "(tests/e2e/pg_infra.py)"}
        log("PostgreSQL %s on :%d" % (ver, pg.port))
        for r in range(1, rounds + 1):
            for backend in ("sqlite", "postgres"):
                runs.append(run_one(backend, r, pg if backend == "postgres" else None, seconds, warmup,
                                    concurrency))
    finally:
        pg.cleanup()

    def med(backend, key):
        v = [x[key] for x in runs if x["backend"] == backend and isinstance(x.get(key), (int, float))]
        return statistics.median(v) if v else None

    summary = {}
    for b in ("sqlite", "postgres"):
        summary[b] = {k: med(b, k) for k in ("post_rps", "latency_p50_ms", "latency_p99_ms",
                                             "stored_messages_per_sec")}
    ratios = {}
    for k in ("post_rps", "latency_p50_ms", "latency_p99_ms", "stored_messages_per_sec"):
        a, b = summary["sqlite"][k], summary["postgres"][k]
        ratios[k] = round(b / a, 3) if a and b else None
    added = {}
    for k in ("latency_p50_ms", "latency_p99_ms"):
        a, b = summary["sqlite"][k], summary["postgres"][k]
        added[k] = round(b - a, 3) if a is not None and b is not None else None
    out.update({"median": summary, "ratio_postgres_to_sqlite": ratios, "added_latency_ms_postgres": added,
                "loadavg_at_end": loadavg(), "runs": runs,
                "errors": ["%s round %d: %s" % (x["backend"], x["round"], e) for x in runs for e in x["errors"]]})
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
