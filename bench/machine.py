"""What the benchmark scripts read off the machine: CPU use from /proc, load, quiet
waits, and the problem lines of a server log. Shared by distributed.py and postgres.py."""

import os
import re
import time

HZ = os.sysconf("SC_CLK_TCK")


def machine_busy():
    """CPU seconds the whole machine has spent busy (user nice system irq softirq steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def wait_quiet(log):
    """Up to QUIET_WAIT s for a second in which the machine is at most QUIET_MAX % of a core
    busy; returns None, or a note saying it measured on a busy machine."""
    deadline = time.monotonic() + float(os.environ.get("QUIET_WAIT", "60"))
    limit = float(os.environ.get("QUIET_MAX", "25"))
    while True:
        a = machine_busy()
        time.sleep(1)
        pct = (machine_busy() - a) * 100
        if pct <= limit:
            return None
        if time.monotonic() >= deadline:
            log("machine still busy (%.0f%% of a core); measuring anyway" % pct)
            return "machine busy (%.0f%% of a core) at the start" % pct
        log("machine busy (%.0f%% of a core); waiting" % pct)
        time.sleep(3)


def problem_lines(path, limit=5):
    """error/warn lines of a log file: (count, last few)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0, []
    bad = [ln for ln in lines
           if not ln.startswith("=== start") and re.search(r"\b(error|warn|warning|critical)\b", ln, re.I)]
    return len(bad), [ln[:300] for ln in bad[-limit:]]
