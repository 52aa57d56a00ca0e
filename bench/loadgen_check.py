#!/usr/bin/env python3
"""What in loadgen's JSON line is an error of the run rather than a figure: broken chunk order
(gaps, duplicates), stalls and unfinished replies, other integrity counts, error/reset events,
streams the server closed, failed POSTs, an empty latency sample (no figure at all, not 0) and
negative latencies (the clocks disagree, so the latency figures cannot be trusted).

Used by run.sh as a command (one error per line on stdout):
    python3 bench/loadgen_check.py NAME FILE
and by distributed.py and postgres.py as a module (loadgen_errors).
"""

import json
import sys

# POST counters (stream mode: post_errors; post mode: errors, connection_errors) -> what they count
POST_FAILURES = {"post_errors": "POSTs not answered 202", "errors": "POSTs not answered 202",
                 "connection_errors": "POST connections that failed"}

# integrity counter -> what one of it is
INTEGRITY = {
    "gaps": "chunk gaps",
    "duplicates": "duplicate chunks",
    "bad_chunk_json": "chunks without message_id/chunk_id",
    "bad_timestamp": "chunks without an RFC 3339 timestamp",
    "event_id_mismatch": "chunks whose id: is not <message_id>:<chunk_id>",
    "complete_without_final": "message_complete events before the final chunk",
    "stalls": "replies silent for the stall limit",
    "unfinished_after_drain": "replies unfinished after the drain",
}

# `loadgen fanout` integrity counter -> what one of it is
FANOUT_INTEGRITY = {
    "gaps": "chunks skipped (lost or out of order)",
    "duplicates": "duplicate chunks",
    "undelivered_after_drain": "chunks published and never delivered",
    "bad_events": "chunk events not understood or without a timestamp",
    "publish_errors": "publishes that failed",
    "streams_dropped": "SSE streams closed during the run",
    "streams_without_chunks": "SSE streams that never received a chunk",
}


def fanout_errors(name, j):
    errors = ["%s: %d %s" % (name, n, what) for key, what in FANOUT_INTEGRITY.items()
              if (n := (j.get("integrity") or {}).get(key))]
    if j.get("streams_up") != j.get("sessions"):
        errors.append("%s: %s of %s SSE streams up" % (name, j.get("streams_up"), j.get("sessions")))
    return errors + latency_errors(name, j)


def loadgen_errors(name, j):
    """Errors of one loadgen result `j` (parsed JSON) of the scenario `name`; [] for an empty
    result (the caller already reported why loadgen gave none)."""
    if not j:
        return []
    if j.get("mode") == "fanout":
        return fanout_errors(name, j)
    errors = []
    for key, what in INTEGRITY.items():
        n = (j.get("integrity") or {}).get(key)
        if n:
            errors.append("%s: %d %s" % (name, n, what))
    events = j.get("events") or {}
    for kind in ("error", "reset", "other"):
        if events.get(kind):
            errors.append("%s: %d %s events" % (name, events[kind], kind))
    dropped = (j.get("sse") or {}).get("dropped_by_server")
    if dropped:
        errors.append("%s: %d SSE streams closed by the server" % (name, dropped))
    if j.get("all_connected") is False:
        errors.append("%s: not every SSE stream connected (%s of %s at the end)"
                      % (name, j.get("connected_at_end"), j.get("connections_requested") or j.get("sessions")))
    for key, what in POST_FAILURES.items():
        if j.get(key):
            errors.append("%s: %d %s" % (name, j[key], what))
    if j.get("mode") in ("stream", "post"):
        errors += latency_errors(name, j)
    return errors


def latency_errors(name, j):
    if not j.get("latency_samples"):
        return ["%s: no latency samples in the measured window (no figure, not 0)" % name]
    if j.get("latency_negative"):
        return ["%s: %d negative chunk latencies (min %s ms): client and server clocks disagree"
                % (name, j["latency_negative"], j.get("latency_min_ms"))]
    return []


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: loadgen_check.py NAME FILE\n")
        return 2
    try:
        with open(argv[2]) as f:
            j = json.load(f)
    except (OSError, ValueError) as e:
        print("%s: loadgen result unreadable: %s" % (argv[1], e))
        return 0
    for e in loadgen_errors(argv[1], j):
        print(e)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
