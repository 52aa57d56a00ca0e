"""AUTH_MODE=jwt end to end: chatd started with an HS256 secret, then with an RS256
public key (issuer and audience checked); the tests make their own tokens with
python3-jwt. Every route that names a user, a session or a reply is tried as its
owner, as another user, without a token and with an expired one. Every answer is
validated against docs/openapi.yaml by the harness."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SECRET = "e2e HS256 secret, long enough for AUTH_JWT_SECRET"
ISSUER = "https://idp.e2e.test"
AUDIENCE = "chatd-e2e"


class JwtModeBase:
    """The tests of both modes; a subclass (also a ChatdTestCase) sets ALG and starts
    the server in setUpClass with start_jwt_server()."""

    ALG = None
    signing_key = None
    claims_extra = {}

    @classmethod
    def start_jwt_server(cls, name, env):
        base = {"AUTH_MODE": "jwt", "WORKER_DEMO_CHUNK_DELAY": "20ms"}
        base.update(env)
        cls.srv = cls.start_server(name, env=base)

    # -- tokens ------------------------------------------------------------------
    def token(self, sub, key=None, alg=None, headers=None, **claims):
        now = int(time.time())
        payload = {"sub": sub, "iat": now, "exp": now + 300}
        payload.update(self.claims_extra)
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key if key is not None else self.signing_key, algorithm=alg or self.ALG,
                          headers=headers)

    def expired(self, sub):
        return self.token(sub, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)

    @staticmethod
    def bearer(token):
        return {"Authorization": "Bearer " + token} if token else {}

    # -- requests ----------------------------------------------------------------
    def chat(self, token, sid, message, **extra):
        body = {"session_id": sid, "message": message}
        body.update(extra)
        return self.srv.post_json("/api/chat", body, headers=self.bearer(token))

    def sse(self, sid, token=None, query_token=None, cookie=None, extra_query=None):
        q = {"session_id": sid}
        if query_token:
            q["access_token"] = query_token
        q.update(extra_query or {})
        headers = self.bearer(token)
        if cookie:
            headers["Cookie"] = cookie
        return self.track(self.srv.sse_path("/api/sse?" + urllib.parse.urlencode(q), headers=headers))

    def get(self, path, token):
        return self.srv.request("GET", path, headers=self.bearer(token))

    def assert_unauthorized(self, resp, token_sent, what):
        self.assertError(resp, 401, "unauthorized", what)
        expected = 'Bearer error="invalid_token"' if token_sent else "Bearer"
        self.assertEqual(resp.header("www-authenticate"), expected, what)

    # -- the matrix ----------------------------------------------------------------
    def test_health_and_api_say_jwt_and_stay_open(self):
        self.assertEqual(self.srv.health()["auth_mode"], "jwt")
        self.assertEqual(self.srv.get("/api").json()["auth_mode"], "jwt")
        self.assertEqual(self.srv.get("/api/providers").status, 200)
        self.assertEqual(self.srv.get("/ready").status, 200)

    def test_every_route_as_owner_other_user_no_token_and_expired_token(self):
        alice, bob = h.new_id("alice"), h.new_id("bob")
        owner, other, stale = self.token(alice), self.token(bob), self.expired(alice)
        sid = h.new_id("s")

        # GET /api/sse: the owner's stream (claims the new session)
        stream = self.sse(sid, owner)
        stream.connected()
        for token, what in ((None, "no token"), (stale, "expired token")):
            c = self.sse(sid, token).open()
            self.assertEqual(c.status, 401, "SSE with %s" % what)
        self.assertEqual(self.sse(sid, other).open().status, 404, "SSE on another user's session")

        # POST /api/chat
        self.assert_unauthorized(self.chat(None, sid, "hi"), False, "chat without a token")
        self.assert_unauthorized(self.chat(stale, sid, "hi"), True, "chat with an expired token")
        self.assertError(self.chat(other, sid, "mine now"), 403, "forbidden", "chat to another user's session")
        r = self.chat(owner, sid, "Hello " * 5)
        self.assertEqual(r.status, 202, r)
        mid = r.json()["message_id"]
        stream.collect_until(h.is_complete_for(mid), 30)

        # GET /api/sessions
        self.assert_unauthorized(self.get("/api/sessions", None), False, "sessions without a token")
        self.assert_unauthorized(self.get("/api/sessions", stale), True, "sessions with an expired token")
        mine = self.get("/api/sessions", owner)
        self.assertEqual(mine.status, 200)
        self.assertIn(sid, [s["session_id"] for s in mine.json()["sessions"]])
        theirs = self.get("/api/sessions", other)
        self.assertEqual(theirs.status, 200)
        self.assertNotIn(sid, [s["session_id"] for s in theirs.json()["sessions"]])

        # GET /api/sessions/{id}/messages: another user's session looks like a missing one
        path = "/api/sessions/%s/messages" % sid
        self.assert_unauthorized(self.get(path, None), False, "history without a token")
        self.assert_unauthorized(self.get(path, stale), True, "history with an expired token")
        self.assertEqual(self.get(path, owner).status, 200)
        theirs = self.get(path, other)
        missing = self.get("/api/sessions/%s/messages" % h.new_id("nosuch"), other)
        self.assertError(theirs, 404, "not_found", "another user's history")
        self.assertEqual(theirs.body, missing.body, "another user's session must read exactly like a missing one")

        # POST /api/chat/{id}/cancel on a running reply
        r = self.chat(owner, sid, " ".join("w%d" % i for i in range(1200)))
        self.assertEqual(r.status, 202, r)
        run = r.json()["message_id"]
        stream.collect_until(lambda e: e.event == "chunk" and e.json()["message_id"] == run, 15)
        cancel = "/api/chat/%s/cancel" % run
        self.assert_unauthorized(self.srv.request("POST", cancel), False, "cancel without a token")
        self.assert_unauthorized(self.srv.request("POST", cancel, headers=self.bearer(stale)), True,
                                 "cancel with an expired token")
        # Another user's running reply reads like a missing one, in its body and in its time: both
        # are answered when the cancel's wait for a worker ends (2 s), not as soon as the worker refuses.
        answers, seconds = {}, {}
        for what, path in (("theirs", cancel), ("missing", "/api/chat/%s/cancel" % h.new_id("msg"))):
            t0 = time.monotonic()
            answers[what] = self.srv.request("POST", path, headers=self.bearer(other))
            seconds[what] = time.monotonic() - t0
            self.assertError(answers[what], 404, "not_found", "another user's cancel (%s)" % what)
        self.assertEqual(answers["theirs"].body, answers["missing"].body)
        for what, s in seconds.items():
            self.assertGreaterEqual(s, 1.9, "%s: a 404 sooner than the wait tells running replies apart" % what)
        self.assertEqual(self.srv.request("POST", cancel, headers=self.bearer(owner)).status, 202)
        stream.collect_until(lambda e: e.event == "message_complete" and e.json()["message_id"] == run, 15)

        # DELETE /api/sessions/{id}
        path = "/api/sessions/%s" % sid
        self.assert_unauthorized(self.srv.request("DELETE", path), False, "delete without a token")
        self.assert_unauthorized(self.srv.request("DELETE", path, headers=self.bearer(stale)), True,
                                 "delete with an expired token")
        self.assertError(self.srv.request("DELETE", path, headers=self.bearer(other)), 404, "not_found",
                         "another user's delete")
        self.assertEqual(self.get("/api/sessions/%s/messages" % sid, owner).status, 200, "a refused delete deleted")
        self.assertEqual(self.srv.request("DELETE", path, headers=self.bearer(owner)).status, 200)

        # POST /api/sessions
        self.assert_unauthorized(self.srv.post_json("/api/sessions", {}), False, "new session without a token")
        self.assert_unauthorized(self.srv.post_json("/api/sessions", {}, headers=self.bearer(stale)), True,
                                 "new session with an expired token")
        made = self.srv.post_json("/api/sessions", {}, headers=self.bearer(owner))
        self.assertEqual(made.status, 201, made)
        new_sid = made.json()["session_id"]
        self.assertEqual(self.get("/api/sessions/%s/messages" % new_sid, owner).status, 200)
        self.assertEqual(self.get("/api/sessions/%s/messages" % new_sid, other).status, 404)

    def test_user_id_must_be_the_tokens_subject(self):
        alice = h.new_id("alice")
        owner = self.token(alice)
        sid = h.new_id("s")
        self.assertEqual(self.chat(owner, sid, "hi", user_id=alice).status, 202)
        self.assertError(self.chat(owner, sid, "hi", user_id=h.new_id("bob")), 403, "forbidden", "user_id != sub")
        self.assertError(self.get("/api/sessions?user_id=someone_else", owner), 403, "forbidden", "list as another")
        self.assertEqual(self.get("/api/sessions?user_id=%s" % alice, owner).status, 200)
        # A malformed id is 400 as without tokens, not compared with the subject.
        self.assertError(self.get("/api/sessions?user_id=a.b", owner), 400, "invalid_request", "bad id in a query")
        self.assertError(self.srv.post_json("/api/sessions", {"user_id": "a.b"}, headers=self.bearer(owner)),
                         400, "invalid_request", "bad id in a body")

    def test_stream_token_from_query_or_cookie(self):
        alice = h.new_id("alice")
        owner = self.token(alice)
        sid = h.new_id("s")
        self.sse(sid, query_token=owner).connected()
        self.sse(sid, cookie="lang=en; chat_token=%s" % owner).connected()
        self.assertEqual(self.sse(sid, query_token=self.expired(alice)).open().status, 401)
        # other routes ignore a token in the query: URLs end up in too many logs
        self.assert_unauthorized(self.get("/api/sessions?access_token=%s" % owner, None), False, "query token")
        # and the server's log never shows a token
        time.sleep(0.2)
        self.assertNotIn(owner, self.srv.log(2_000_000))

    def test_forged_tokens_are_refused(self):
        alice = h.new_id("alice")
        now = int(time.time())
        body = {"sub": alice, "exp": now + 300}
        body.update(self.claims_extra)
        unsigned = jwt.encode(body, None, algorithm="none")
        forged = [("alg none", unsigned),
                  ("not a JWT", "abc.def"),
                  ("not yet valid", self.token(alice, nbf=now + 3600)),
                  ("no exp", self.token(alice, exp=None)),
                  ("bad sub", self.token("not a valid id"))]
        forged += self.more_forgeries(alice)
        for what, token in forged:
            with self.subTest(what):
                self.assert_unauthorized(self.get("/api/sessions", token), True, what)
        self.assert_unauthorized(self.srv.request("GET", "/api/sessions", headers={"Authorization": "Basic dTpw"}),
                                 True, "Basic credentials")
        # Two Authorization lines are refused, whichever holds the good token.
        conn = h.HttpConn(self.srv.port)
        try:
            conn.send_raw(("GET /api/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           "Authorization: Bearer %s\r\nAuthorization: Bearer forged\r\n\r\n"
                           % self.token(alice)).encode())
            self.assert_unauthorized(conn.read_response("GET", target="/api/sessions"), True, "two Authorization lines")
        finally:
            conn.close()

    def more_forgeries(self, sub):
        return []

    def test_a_stream_on_a_new_session_never_gets_another_users_reply(self):
        # bob watches a session id before it exists; alice then cannot create it
        alice, bob = h.new_id("alice"), h.new_id("bob")
        sid = h.new_id("s")
        watcher = self.sse(sid, self.token(bob))
        watcher.connected()
        self.assertError(self.chat(self.token(alice), sid, "secret of alice"), 403, "forbidden",
                         "creating a session someone already watches")
        # bob's own message streams to bob, and nothing of alice's ever did
        r = self.chat(self.token(bob), sid, "bob here")
        self.assertEqual(r.status, 202, r)
        events = watcher.collect_until(h.is_complete_for(r.json()["message_id"]), 30)
        self.assertFalse([e for e in events if e.event == "chunk" and e.json()["message_id"] != r.json()["message_id"]])


class Hs256Test(JwtModeBase, h.ChatdTestCase):
    ALG = "HS256"
    signing_key = SECRET

    @classmethod
    def setUpClass(cls):
        cls.start_jwt_server("auth-hs256", {"AUTH_JWT_SECRET": SECRET})

    def more_forgeries(self, sub):
        return [("another secret", self.token(sub, key="another secret that is long enough to be one"))]


class Rs256Test(JwtModeBase, h.ChatdTestCase):
    ALG = "RS256"
    claims_extra = {"iss": ISSUER, "aud": AUDIENCE}

    @classmethod
    def setUpClass(cls):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cls.signing_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
        cls.public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        cls.keydir = tempfile.mkdtemp(prefix="chatd-e2e-auth-")
        path = os.path.join(cls.keydir, "public.pem")
        with open(path, "wb") as f:
            f.write(cls.public_pem)
        cls.start_jwt_server("auth-rs256", {"AUTH_JWT_PUBLIC_KEY_FILE": path, "AUTH_JWT_ISSUER": ISSUER,
                                            "AUTH_JWT_AUDIENCE": AUDIENCE})

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.keydir, ignore_errors=True)

    def more_forgeries(self, sub):
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return [("another RSA key", self.token(sub, key=other)),
                ("wrong issuer", self.token(sub, iss="https://evil.test")),
                ("no issuer", self.token(sub, iss=None)),
                ("wrong audience", self.token(sub, aud="another-service")),
                ("HS256 signed with the public key", self.hs256_with_public_key(sub))]

    def hs256_with_public_key(self, sub):
        # python3-jwt refuses to use a PEM as an HMAC secret, so sign by hand.
        import base64
        import hashlib
        import hmac

        def b64(data):
            return base64.urlsafe_b64encode(data).rstrip(b"=")
        payload = {"sub": sub, "exp": int(time.time()) + 300, "iss": ISSUER, "aud": AUDIENCE}
        signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(payload).encode())
        return (signing_input + b"." + b64(hmac.new(self.public_pem, signing_input, hashlib.sha256).digest())).decode()


class JwksRotationTest(h.ChatdTestCase):
    """AUTH_JWKS_FILE: ES256 and RS256 keys by kid; a rewritten file takes effect without a restart."""

    @classmethod
    def setUpClass(cls):
        from cryptography.hazmat.primitives.asymmetric import ec
        cls.keys = {"k1": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
                    "k2": (ec.generate_private_key(ec.SECP256R1()), "ES256")}
        cls.keydir = tempfile.mkdtemp(prefix="chatd-e2e-jwks-")
        cls.path = os.path.join(cls.keydir, "jwks.json")
        cls.publish(["k1"])
        cls.srv = cls.start_server("auth-jwks", env={"AUTH_MODE": "jwt", "AUTH_JWKS_FILE": cls.path})

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.keydir, ignore_errors=True)

    @classmethod
    def publish(cls, kids):
        keys = []
        for kid in kids:
            key, alg = cls.keys[kid]
            algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
            jwk = json.loads(algo.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "use": "sig", "alg": alg})
            keys.append(jwk)
        # Written beside, then renamed: the server never reads half a file.
        with open(cls.path + ".tmp", "w") as f:
            json.dump({"keys": keys}, f)
        os.replace(cls.path + ".tmp", cls.path)

    def token(self, kid, sub="alice"):
        key, alg = self.keys[kid]
        return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, key, algorithm=alg, headers={"kid": kid})

    def status(self, token):
        return self.srv.request("GET", "/api/sessions", headers={"Authorization": "Bearer " + token}).status

    def test_keys_rotate_without_a_restart(self):
        self.assertEqual(self.status(self.token("k1")), 200)
        self.assertEqual(self.status(self.token("k2")), 401)
        self.publish(["k1", "k2"])
        h_deadline = time.monotonic() + 5
        while self.status(self.token("k2")) != 200:
            self.assertLess(time.monotonic(), h_deadline, "the rewritten JWKS was not read")
            time.sleep(0.05)
        self.publish(["k2"])
        while self.status(self.token("k1")) != 401:
            self.assertLess(time.monotonic(), h_deadline + 5, "a key removed from the JWKS still works")
            time.sleep(0.05)
        self.assertEqual(self.status(self.token("k2")), 200)


class AuthStartupTest(h.ChatdTestCase):
    def exit_of(self, env, timeout=10.0):
        srv = self.new_server("auth-start", env=env, start=False)
        srv.spawn()
        try:
            code = srv.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            srv.kill()
            self.fail("chatd started with %r" % env)
        return code, srv.log()

    def test_jwt_without_a_usable_key_does_not_start(self):
        code, log = self.exit_of({"AUTH_MODE": "jwt"})
        self.assertEqual(code, 2, log)
        self.assertIn("AUTH_JWT_SECRET", log)
        code, log = self.exit_of({"AUTH_MODE": "jwt", "AUTH_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"})
        self.assertEqual(code, 2, log)
        self.assertIn("/nonexistent/key.pem", log)

    def test_none_mode_warns_when_listening_beyond_loopback(self):
        srv = self.new_server("auth-none-any", env={"SERVER_HOST": "0.0.0.0"})
        self.assertEqual(srv.health()["auth_mode"], "none")
        self.assertIn("auth_disabled", srv.log())
        quiet = self.new_server("auth-none-lo")
        self.assertNotIn("auth_disabled", quiet.log())


if __name__ == "__main__":
    unittest.main()
