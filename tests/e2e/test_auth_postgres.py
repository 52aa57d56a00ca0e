"""AUTH_MODE=jwt on PostgreSQL: the matrix of test_auth (HS256), and two pods sharing the
database, where a stream opened on one pod claims a new session against a POST on the other."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pg_infra  # noqa: E402
from test_auth import SECRET, JwtModeBase  # noqa: E402


class PostgresHs256Test(JwtModeBase, h.ChatdTestCase):
    ALG = "HS256"
    signing_key = SECRET
    pg = None

    @classmethod
    def setUpClass(cls):
        cls.pg = pg_infra.PostgresServer(name="pg-auth")
        try:
            cls.pg.start()
            cls.db = cls.pg.create_database()
            env = cls.pg.chatd_env(cls.db)
            env["AUTH_JWT_SECRET"] = SECRET
            cls.start_jwt_server("auth-pg-1", env)
            # A second pod on the same database, with its own spill journal.
            env = cls.pg.chatd_env(cls.db, DB_SPILL_DIR=os.path.join(cls.pg.tmpdir, "spill-pod-2"),
                                   AUTH_MODE="jwt", AUTH_JWT_SECRET=SECRET)
            cls.srv2 = cls.start_server("auth-pg-2", env=env)
        except BaseException:
            cls.stop_servers()
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.pg.cleanup()

    def test_a_stream_on_one_pod_claims_the_session_against_a_post_on_another(self):
        alice, bob = h.new_id("alice"), h.new_id("bob")
        sid = h.new_id("s")
        watcher = self.sse(sid, self.token(bob))  # on pod 1
        watcher.connected()
        r = self.srv2.post_json("/api/chat", {"session_id": sid, "message": "secret of alice"},
                                headers=self.bearer(self.token(alice)))
        self.assertError(r, 403, "forbidden", "creating, on another pod, a session someone watches")
        # ...and the other pod answers bob's session to alice like a missing one
        r = self.srv2.request("GET", "/api/sessions/%s/messages" % sid, headers=self.bearer(self.token(alice)))
        self.assertError(r, 404, "not_found", "another user's session on the other pod")
        r = self.srv2.request("GET", "/api/sessions/%s/messages" % sid, headers=self.bearer(self.token(bob)))
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    unittest.main()
