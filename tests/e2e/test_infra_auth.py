"""Authenticated infrastructure: nats-server with a token, with mutual TLS and with the role
permissions of deploy/nats/nats.conf; redis-server with an ACL user. Real servers, certificates
made by openssl here. A refused login is a start-up error that names the setting (exit 2, never a
hang), and the secret itself never appears in the output.

Run (from tests/e2e): CHATD_BIN=../../build/chatd python3 -m unittest -v test_infra_auth
"""

import os
import shutil
import subprocess
import tempfile
import unittest
import uuid

from harness import ReplyCheck, is_complete_for, new_id
from infra import START_LIMIT, Cluster, ClusterTestCase, NatsClient, demo_reply, run_to_exit, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATS_CONF = os.path.join(REPO, "deploy", "nats", "nats.conf")
class RefusalChecks:
    """Both programs exit with status 2 and a message naming `setting`, without `secret`."""

    def assert_refused(self, env, setting, secret=None, programs=("pod", "worker")):
        for program in programs:
            with self.subTest(program=program, setting=setting):
                rc, out = run_to_exit(program, env)
                self.assertIsNotNone(rc, "%s did not exit within %.0fs; output:\n%s" % (program, START_LIMIT, out))
                self.assertEqual(rc, 2, "%s exit code; output:\n%s" % (program, out))
                self.assertIn(setting, out, "%s does not name %s; output:\n%s" % (program, setting, out))
                if secret:
                    self.assertNotIn(secret, out, "%s printed the secret" % program)


def chat_once(test, cluster, stream_pod="pod-a", post_pod="pod-a", message="Hello over a guarded bus"):
    """One reply streamed to `stream_pod` for a chat posted on `post_pod`; returns (acc, ReplyCheck)."""
    sid, uid = new_id("s"), new_id("u")
    c, _ = test.open_sse(cluster.pod(stream_pod), sid, uid)
    acc = cluster.pod(post_pod).chat_ok(sid, uid, message)
    evs = c.collect_until(is_complete_for(acc["message_id"]), 30)
    rc = ReplyCheck(test, evs, acc["message_id"], sid)
    test.assertEqual(rc.text, demo_reply(message))
    return acc, rc, sid, uid


class NatsTokenTest(ClusterTestCase, RefusalChecks):
    TOKEN = "tok-" + uuid.uuid4().hex

    @classmethod
    def setUpClass(cls):
        env = {"NATS_TOKEN": cls.TOKEN}
        cls.cluster = Cluster(pods=1, workers=1, redis=False, nats_args=["--auth", cls.TOKEN],
                              pod_env=env, worker_env=env).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_chat_over_a_token_protected_server(self):
        chat_once(self, self.cluster)

    def test_a_wrong_token_is_a_startup_error_naming_it(self):
        wrong = "wrong-" + uuid.uuid4().hex
        self.assert_refused({"NATS_URL": self.cluster.nats.url, "NATS_TOKEN": wrong}, "NATS_TOKEN", wrong)

    def test_no_login_for_a_server_that_wants_one_says_so(self):
        self.assert_refused({"NATS_URL": self.cluster.nats.url}, "NATS_URL: the NATS server requires a login")

    def test_a_client_without_the_token_is_refused(self):
        with self.assertRaises(Exception):
            c = NatsClient(self.cluster.nats.port, name="intruder", timeout=3.0)
            c.flush(3.0)


def make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA;
    and a second, unrelated CA."""
    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=directory, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                "-subj", "/CN=chat test " + ca)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(directory, name + ".ext"), "w") as f:
            f.write(ext)
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=chat " + name)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")
    return {n: os.path.join(directory, n) for n in ("ca.pem", "other-ca.pem", "server.pem", "server.key",
                                                     "client.pem", "client.key")}


class NatsMutualTlsTest(ClusterTestCase, RefusalChecks):
    @classmethod
    def setUpClass(cls):
        cls.certs_dir = tempfile.mkdtemp(prefix="chatd-e2e-certs-")
        c = cls.certs = make_certificates(cls.certs_dir)
        cls.tls_env = {"NATS_TLS_CA": c["ca.pem"], "NATS_TLS_CERT": c["client.pem"], "NATS_TLS_KEY": c["client.key"]}
        cls.cluster = Cluster(pods=1, workers=1, redis=False,
                              nats_args=["--tls", "--tlscert", c["server.pem"], "--tlskey", c["server.key"],
                                         "--tlsverify", "--tlscacert", c["ca.pem"]],
                              pod_env=cls.tls_env, worker_env=cls.tls_env).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        shutil.rmtree(cls.certs_dir, ignore_errors=True)

    def env(self, **settings):
        e = {"NATS_URL": self.cluster.nats.url}
        e.update(settings)
        return e

    def test_chat_over_mutual_tls(self):
        chat_once(self, self.cluster)

    def test_plain_connection_to_a_tls_server_is_a_startup_error(self):
        # nats.c follows the server to TLS, and then cannot verify the server's certificate
        self.assert_refused(self.env(), "NATS_TLS_CA/NATS_TLS_CERT: TLS with the NATS server failed")

    def test_an_untrusted_server_certificate_is_a_startup_error(self):
        e = dict(self.tls_env, NATS_TLS_CA=self.certs["other-ca.pem"])
        self.assert_refused(self.env(**e), "NATS_TLS_CA/NATS_TLS_CERT: TLS with the NATS server failed")

    def test_no_client_certificate_for_a_verifying_server_is_a_startup_error(self):
        self.assert_refused(self.env(NATS_TLS_CA=self.certs["ca.pem"]),
                            "NATS_TLS_CERT/NATS_TLS_KEY: the NATS server closed the connection after TLS")

    def test_an_unreadable_certificate_file_is_a_configuration_error(self):
        self.assert_refused(self.env(NATS_TLS_CA=os.path.join(self.certs_dir, "missing.pem")),
                            "NATS_TLS_CA: cannot read")


class RedisAclTest(ClusterTestCase, RefusalChecks):
    USER, PASSWORD = "chat-registry", "pw-" + uuid.uuid4().hex

    @classmethod
    def setUpClass(cls):
        env = {"REDIS_USERNAME": cls.USER, "REDIS_PASSWORD": cls.PASSWORD}
        cls.cluster = Cluster(pods=2, workers=1, redis_acl_user=(cls.USER, cls.PASSWORD),
                              pod_env=env, worker_env=env).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def env(self, **settings):
        e = {"NATS_URL": self.cluster.nats.url, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.cluster.redis.port)}
        e.update(settings)
        return e

    def test_cross_pod_chat_with_the_registry_behind_an_acl_user(self):
        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(self.cluster.pod("pod-b"), sid, uid)
        redis = self.cluster.redis_client()
        members = wait_until(lambda: redis.execute("SMEMBERS", "session:connections:" + sid), 10,
                             msg="pod-b registered the stream in Redis")
        self.assertTrue(any(m.startswith("pod-b:") for m in members), members)
        acc = self.cluster.pod("pod-a").chat_ok(sid, uid, "routed through an authenticated registry")
        evs = c.collect_until(is_complete_for(acc["message_id"]), 30)
        ReplyCheck(self, evs, acc["message_id"], sid)

    def test_a_wrong_password_is_a_startup_error_naming_it(self):
        wrong = "wrong-" + uuid.uuid4().hex
        self.assert_refused(self.env(REDIS_USERNAME=self.USER, REDIS_PASSWORD=wrong),
                            "REDIS_USERNAME/REDIS_PASSWORD: Redis refused the login", wrong)

    def test_no_login_for_a_redis_that_wants_one_says_so(self):
        self.assert_refused(self.env(), "REDIS_PASSWORD: Redis requires a login")


class NatsRolePermissionsTest(ClusterTestCase):
    """deploy/nats/nats.conf: pods and workers log in as their role and can do their job, and no more."""

    POD_PASSWORD, WORKER_PASSWORD = "pod-" + uuid.uuid4().hex, "worker-" + uuid.uuid4().hex

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(
            pods=2, workers=2, nats_args=["-c", NATS_CONF],
            nats_env={"CHAT_NATS_POD_PASSWORD": cls.POD_PASSWORD, "CHAT_NATS_WORKER_PASSWORD": cls.WORKER_PASSWORD},
            pod_env={"NATS_USER": "chat-pod", "NATS_PASSWORD": cls.POD_PASSWORD},
            worker_env={"NATS_USER": "chat-worker", "NATS_PASSWORD": cls.WORKER_PASSWORD,
                        "WORKER_DEMO_CHUNK_DELAY": "50ms"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def login(self, role):
        password = self.POD_PASSWORD if role == "chat-pod" else self.WORKER_PASSWORD
        c = NatsClient(self.cluster.nats.port, name="e2e-" + role, login={"user": role, "pass": password})
        self.cluster._clients.append(c)
        return c

    def violations(self, since=0):
        """Lines of the nats-server log from byte `since` on that report a refusal; and the log's end."""
        with open(self.cluster.nats.log_path, "rb") as f:
            f.seek(since)
            text = f.read()
        return [line for line in text.decode(errors="replace").splitlines() if "Violation" in line], since + len(text)

    def test_every_path_works_under_the_role_permissions(self):
        # live chunks to two pods, the chunk log read by a pod that joins late, a cancel answered
        # by the worker
        _, log_start = self.violations()
        chat_once(self, self.cluster, stream_pod="pod-b", post_pod="pod-a")
        sid, uid = new_id("s"), new_id("u")
        acc = self.cluster.pod("pod-a").chat_ok(sid, uid, "finished before anyone watched")
        self.cluster.pod("pod-a").wait_message_row(acc["message_id"], "complete")
        late, _ = self.open_sse(self.cluster.pod("pod-b"), sid, uid)
        evs = late.collect_until(is_complete_for(acc["message_id"]), 30)
        ReplyCheck(self, evs, acc["message_id"], sid)

        sid, uid = new_id("s"), new_id("u")
        c, _ = self.open_sse(self.cluster.pod("pod-a"), sid, uid)
        acc = self.cluster.pod("pod-a").chat_ok(sid, uid, "a reply long enough to be stopped " * 4)
        c.collect_until(lambda ev: ev.event == "chunk", 15)
        r = self.cluster.pod("pod-b").request(
            "POST", "/api/chat/%s/cancel?user_id=%s" % (acc["message_id"], uid))
        self.assertEqual(r.status, 202, r.body[:300])
        evs = c.collect_until(is_complete_for(acc["message_id"]), 30)
        self.assertTrue(any(e.event == "error" and e.json().get("code") == "cancelled" for e in evs),
                        [e.event for e in evs][-5:])

        # a chat cancelled while no worker is up: the pod that accepted it answers the cancel, and
        # withdraws the request from the work queue
        for w in self.cluster.workers:
            w.stop()
        try:
            a = self.cluster.pod("pod-a")
            acc = a.chat_ok(new_id("s"), uid, "nobody takes this one")
            r = self.cluster.pod("pod-b").request("POST", "/api/chat/%s/cancel?user_id=%s" % (acc["message_id"], uid))
            self.assertEqual(r.status, 202, r.body[:300])
            wait_until(lambda: "request_withdrawn message_id=%s" % acc["message_id"] in a.log(400000), 10,
                       msg="pod-a withdrew the request")
        finally:
            for w in self.cluster.workers:
                w.start()
            self.cluster.wait_workers_subscribed()
        self.assertEqual(self.violations(log_start)[0], [], "nats-server refused something a pod or worker does")

    def test_a_pod_cannot_publish_chunks_and_a_worker_cannot_post_requests(self):
        pod = self.login("chat-pod")
        pod.publish("chat.pod.pod-a.response", b'{"session_id":"s","message_id":"m","chunk_id":0}')
        pod.publish("chat.log.s.m", b"{}")
        pod.subscribe("chat.workflow.execute.*")
        worker = self.login("chat-worker")
        worker.publish("chat.workflow.execute.s", b"{}")
        worker.subscribe("chat.pod.*.response")
        for c in (pod, worker):
            c.flush(5.0)
        wait_until(lambda: len(pod.errors) >= 3 and len(worker.errors) >= 2, 5,
                   msg="permission errors for both roles")
        self.assertTrue(any("Publish" in e and "chat.pod.pod-a.response" in e for e in pod.errors), pod.errors)
        self.assertTrue(any("Publish" in e and "chat.log.s.m" in e for e in pod.errors), pod.errors)
        self.assertTrue(any("Subscription" in e and "chat.workflow.execute.*" in e for e in pod.errors), pod.errors)
        self.assertTrue(any("Publish" in e and "chat.workflow.execute.s" in e for e in worker.errors), worker.errors)
        self.assertTrue(any("Subscription" in e and "chat.pod.*.response" in e for e in worker.errors),
                        worker.errors)

    def test_nobody_else_gets_in(self):
        for login in ({}, {"user": "chat-pod", "pass": "not-the-password"}, {"user": "admin", "pass": "admin"}):
            with self.subTest(login=login.get("user")):
                with self.assertRaises(Exception):
                    c = NatsClient(self.cluster.nats.port, name="intruder", timeout=3.0, login=login)
                    c.flush(3.0)


if __name__ == "__main__":
    unittest.main()
