"""The chat page through the local cluster: scripts/cluster.sh with two chatd pods behind nginx,
NATS JetStream, Redis, PostgreSQL and two chat-workers (none for NoWorkerPageTest), on free ports (the reference ports stay
free for test_cluster). The browser only knows nginx: a reload or a second window may land on
either pod.

Run (from tests/web): CHATD_BIN=$PWD/../../build/chatd /usr/bin/python3 -m unittest -v test_chat_page_cluster
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
import uuid

from browser import Browser, StoredHistory, normalize, wait_until  # first: it puts tests/e2e on the path
import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "cluster.sh")


def port_in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port_run(count):
    """The first of `count` consecutive free ports."""
    for _ in range(100):
        base = harness.free_port()
        if base + count < 65536 and not any(port_in_use(p) for p in range(base, base + count)):
            return base
    raise RuntimeError("no %d consecutive free ports" % count)


class ClusterPage(unittest.TestCase):
    """The cluster (with WORKERS chat-workers) and a browser for each test."""
    maxDiff = 4000
    WORKERS = 2
    POD_ENV = ""  # more settings for the pods, "NAME=value ..."

    @classmethod
    def setUpClass(cls):
        # Ports are picked free but bound seconds later, after PostgreSQL and the pods start;
        # a test running beside this one may take one in between. Such an `up` is tried again
        # on new ports; any other failure fails at once.
        for attempt in range(3):
            up = cls.up()
            if up.returncode == 0:
                return
            cls.down()
            taken = "ddress already in use" in up.stderr or "is in use" in up.stderr
            if not taken or attempt == 2:
                raise AssertionError("scripts/cluster.sh up failed (%d):\n%s\n%s"
                                     % (up.returncode, up.stdout, up.stderr))
            print("cluster.sh up: a port was taken meanwhile; again on new ports", file=sys.stderr)

    @classmethod
    def up(cls):
        cls.run_dir = tempfile.mkdtemp(prefix="chatd-web-cluster-")
        os.chmod(cls.run_dir, 0o755)  # initdb runs as postgres and must enter it
        pod_base = free_port_run(3)  # pods on base+1 and base+2
        cls.http_port = harness.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(harness._SCRUB_PREFIXES + ("CLUSTER_",))}
        env.update({
            "CLUSTER_DIR": cls.run_dir,
            "BUILD": os.path.dirname(os.path.abspath(harness.chatd_bin())),
            "CLUSTER_HTTP_PORT": str(cls.http_port),
            "CLUSTER_POD_BASE_PORT": str(pod_base),
            "CLUSTER_PODS": "2",
            "CLUSTER_WORKERS": str(cls.WORKERS),
            "CLUSTER_NATS_PORT": str(harness.free_port()),
            "CLUSTER_REDIS_PORT": str(harness.free_port()),
            "CLUSTER_PG_PORT": str(harness.free_port()),
            # A demo reply lasts about 6 s: time to reload or stop in the middle of it.
            "WORKER_DEMO_CHUNK_DELAY": "200ms",
            "CLUSTER_POD_ENV": cls.POD_ENV,
        })
        cls.env = env
        return subprocess.run([SCRIPT, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)

    @classmethod
    def down(cls):
        try:
            subprocess.run([SCRIPT, "down"], env=cls.env, cwd=ROOT, capture_output=True, text=True, timeout=180,
                           stdin=subprocess.DEVNULL)
        finally:
            if os.environ.get("E2E_KEEP_LOGS") != "1":
                shutil.rmtree(cls.run_dir, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls.down()

    def setUp(self):
        self.user = "grace-" + uuid.uuid4().hex[:6]
        self.history = StoredHistory(self.http_port, self.user)
        self.browser = Browser()
        self.page = self.browser.page("http://127.0.0.1:%d" % self.http_port)

    def tearDown(self):
        try:
            problems = self.browser.console_problems()
        finally:
            self.browser.quit()
        self.assertEqual(problems, [], "the page logged errors (script, CSP or Trusted Types)")

    def run(self, result=None):
        result = result or self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        if len(result.failures) + len(result.errors) > before:
            logs = subprocess.run([SCRIPT, "logs"], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            sys.stderr.write("\n----- cluster logs (test %s failed) -----\n%s\n" % (self.id(), logs.stdout[-20000:]))
        return result

    def assert_same_as_stored(self, shown, stored, context):
        self.assertEqual(normalize(shown["text"]), normalize(stored["content"]),
                         "%s: the page shows another text than the one stored" % context)

    def pods_whose_log_has(self, *needles):
        found = []
        for name in sorted(os.listdir(os.path.join(self.run_dir, "logs"))):
            if name.startswith("pod-") and name.endswith(".log"):
                with open(os.path.join(self.run_dir, "logs", name), errors="replace") as f:
                    if any(all(n in line for n in needles) for line in f):
                        found.append(name[:-len(".log")])
        return found

    def assert_ended_off_the_streams_pod(self, end_line, reply_id, session_id, path):
        """The pod that logged the reply's `end_line` is not the one of the page's stream, so the end came to the
        page through `path`, not as events."""
        ended_on = self.pods_whose_log_has(end_line, "message_id=%s" % reply_id)
        streamed_on = self.pods_whose_log_has("sse_connected", "session_id=%s" % session_id)
        self.assertEqual(len(ended_on), 1, ended_on)
        self.assertNotIn(ended_on[0], streamed_on,
                         "the page's stream was on the pod that ended the reply: the end came as events, and %s "
                         "this test is for was not needed" % path)


class ClusterPageTest(ClusterPage):
    def test_reply_streams_through_nginx_and_ends_as_stored(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Hello through the load balancer")
        seen, final = page.watch_growth(reply_id)
        self.assertGreaterEqual(len(set(seen)), 3, "the reply did not grow over several observations: %r" % seen)
        self.assertEqual(final["status"], "complete")
        stored = self.history.wait_message(page.session_id(), reply_id)
        self.assertEqual(stored["status"], "complete")
        self.assert_same_as_stored(final, stored, "reply through nginx")

    def test_reload_in_the_middle_of_a_reply_resumes_on_whichever_pod(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Keep going while I reload")
        session_id = page.session_id()
        before = wait_until("some of the reply before the reload",
                            lambda: (lambda m: m if m and m["status"] == "streaming" and len(m["text"]) > 40 else None)(
                                page.message(reply_id)))
        page.reload()
        after = page.wait_status(reply_id, ("streaming", "complete"))
        self.assertEqual(after["status"], "streaming", "the reply ended before the page came back: nothing resumed")
        self.assertTrue(normalize(after["text"]).startswith(normalize(before["text"])))
        seen, final = page.watch_growth(reply_id)
        self.assertTrue(seen, "the reply did not go on streaming after the reload")
        self.assertEqual(final["status"], "complete")
        self.assert_same_as_stored(final, self.history.wait_message(session_id, reply_id), "reply resumed after a reload")
        self.assertEqual([m["role"] for m in page.messages()], ["user", "assistant"], "a message was shown twice")

    def test_two_windows_and_stop(self):
        first = self.page.open(user=self.user)
        opening = first.send("Open this conversation twice")
        first.wait_status(opening, "complete")
        session_id = first.session_id()
        second = self.browser.new_window(first.base_url).open(session_id)
        wait_until("the second window to show the conversation", lambda: len(second.messages()) == 2)

        reply_id = first.send("Then stop the reply from the second window")
        wait_until("the second window to show the reply streaming",
                   lambda: (lambda m: m and m["status"] == "streaming" and m["text"])(second.message(reply_id)))
        wait_until("the stop button in the second window", lambda: second.visible("stop"))
        second.find("stop").click()
        for window in (second, first):
            final = window.wait_status(reply_id, ("cancelled", "complete", "error"))
            self.assertEqual(final["status"], "cancelled", "a window does not show the reply stopped: %r" % final)
        stored = self.history.wait_message(session_id, reply_id)
        self.assertEqual(stored["status"], "cancelled")
        self.assert_same_as_stored(first.message(reply_id), stored, "first window")
        self.assert_same_as_stored(second.message(reply_id), stored, "second window")


class NoWorkerPageTest(ClusterPage):
    """No chat-worker runs: a chat waits in the JetStream work queue, and Stop ends it on the pod that accepted
    it (docs/API.md#cancel). nginx's least_conn sends the POST to the pod that does not hold the page's stream,
    so no event of the end reaches the page: it learns of it from the stored history (docs/WEB.md)."""
    WORKERS = 0

    def test_stop_of_a_chat_no_worker_took_shows_it_stopped(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Nobody takes this one yet")
        session_id = page.session_id()
        self.assertEqual(page.message(reply_id)["status"], "streaming")
        wait_until("the stop button", lambda: page.visible("stop"))
        page.find("stop").click()
        final = page.wait_status(reply_id, ("cancelled", "complete", "error"), timeout=20)
        self.assertEqual(final["status"], "cancelled", "the page does not show the reply stopped: %r" % final)
        stored = self.history.wait_message(session_id, reply_id)
        self.assertEqual((stored["status"], stored["content"]), ("cancelled", ""))
        self.assertEqual(normalize(final["text"]), "")
        self.assert_ended_off_the_streams_pod("reply_cancelled_before_start", reply_id, session_id,
                                              "the history fallback")



class GivenUpPageTest(ClusterPage):
    """No chat-worker runs, and a pod gives up a reply of which no chunk came 2 × BUFFER_MAX_AGE (here 4 s) after
    its POST (docs/API.md#reply-end). That pod is not the one of the page's stream (nginx's least_conn), so no event
    of the end reaches the page: it finds the reply stored ended when it looks, as it does for a reply silent for
    30 s (docs/WEB.md), and the user can send again."""
    WORKERS = 0
    POD_ENV = "BUFFER_MAX_AGE=2s BUFFER_CLEANUP_INTERVAL=500ms"

    def test_a_reply_given_up_on_another_pod_ends_on_the_page(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Nobody takes this one")
        session_id = page.session_id()
        stored = self.history.wait_message(session_id, reply_id, timeout=30)
        self.assertEqual((stored["status"], stored["content"], stored["metadata"].get("error_code")),
                         ("incomplete", "", "reply_timeout"), stored)
        final = page.wait_status(reply_id, ("complete", "cancelled", "error"), timeout=90)
        self.assertEqual(final["status"], "error", final)
        self.assert_ended_off_the_streams_pod("reply_finished", reply_id, session_id, "the history check")
        wait_until("the composer to take a message again", lambda: page.visible("send") and not page.visible("stop"))


if __name__ == "__main__":
    unittest.main()