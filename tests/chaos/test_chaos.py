"""The short chaos run (in `make test`, label `chaos`): the local cluster with single-node NATS under
every fault kind once, while browser-like clients chat and reconnect. Asserts, for every accepted
chat, one stored reply (complete, or failed with its reason) whose text every client ends up with,
no chunk twice and no gap after the last reset, and no client silent for long while a reply of its
session is being generated. Prints the one-line JSON report.

Run (from tests/chaos): CHATD_BIN=../../build/chatd /usr/bin/python3 -m unittest -v test_chaos
CHAOS_SEED=<n> repeats a run's choices (the faults' targets, the messages); E2E_KEEP_LOGS=1 keeps
the temp dirs. The long run is bench/chaos.py.
"""

import os
import sys
import unittest

import chaos_harness as ch

# A client may be silent this long while a reply of its session is generated: a worker killed in
# the middle of a reply is presumed dead after JS_ACK_WAIT (5 s here), and the streams are told of
# the delay after 3 s; a reconnect waits for the retry hint (1 s, up to 2.25 s at a hand-off).
SILENCE_LIMIT_S = 8.0


class ChaosShortRunTest(unittest.TestCase):
    maxDiff = None

    def test_every_fault_once_nothing_lost(self):
        seed = int(os.environ.get("CHAOS_SEED") or 0) or None
        cfg = ch.ChaosConfig(faults=list(ch.SINGLE_NODE_FAULTS), sessions=8, warmup=6.0, fault_interval=6.0,
                             cooldown=5.0, settle_timeout=75.0, **({"seed": seed} if seed else {}))
        report = ch.run_chaos(cfg)
        s = report.summary
        print("\nchaos report: " + report.json_line())
        sys.stdout.flush()
        problems = report.describe()
        if report.failed():
            sys.stderr.write("\n%s\n===== cluster logs =====%s===== end =====\n" % (problems, report.logs))
        else:
            sys.stderr.write("\n%s\n%s\n" % (report.longest_detail, report.slowest_detail))
        self.assertEqual(set(s["faults"]), set(ch.SINGLE_NODE_FAULTS), "every fault kind injected: %r" % s["faults"])
        self.assertGreaterEqual(s["chats"], 40, "too few chats to prove anything: %r" % s)
        self.assertEqual(s["lost"], 0, problems)
        self.assertEqual(s["duplicated"], 0, problems)
        self.assertEqual(s["gaps"], 0, problems)
        self.assertEqual(s["mixed_attempts"], 0, problems)
        self.assertEqual(s["mismatched"], 0, problems)
        self.assertEqual(s["stored_text_wrong"], 0, problems)
        self.assertEqual(s["stored_once_pct"], 100.0, problems)
        self.assertEqual(report.violations, [], problems)
        self.assertLessEqual(s["longest_silence_s"], SILENCE_LIMIT_S, report.longest_detail)


if __name__ == "__main__":
    unittest.main()
