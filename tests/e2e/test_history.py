"""History API end to end, on the embedded SQLite store and on PostgreSQL.

GET /api/sessions?user_id=                          sessions, newest first
GET /api/sessions/{id}/messages?user_id=&limit=&before=   a page, oldest first, next_before cursor
DELETE /api/sessions/{id}?user_id=                  owner only
POST /api/chat/{message_id}/cancel?user_id=         stops a running reply, stored as cancelled

The same tests run twice: SqliteHistoryTest (chatd with nothing configured) and
PostgresHistoryTest (DB_HOST set, a real PostgreSQL 15 from pg_infra).
"""

import datetime
import os
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import pg_infra  # noqa: E402

FAST = {"WORKER_DEMO_CHUNK_DELAY": "2ms"}
# ~90 words at 3 words per chunk: ~30 chunks, ~4.5 s of streaming, time enough to cancel or delete.
SLOW = {"WORKER_DEMO_CHUNK_DELAY": "150ms"}
SLOW_PACE_S = 0.15


def parse_time(s):
    if not isinstance(s, str):
        raise AssertionError("timestamp is not a string: %r" % (s,))
    if not h.RFC3339_RE.match(s):
        raise AssertionError("timestamp is not RFC 3339: %r" % (s,))
    t = s.replace("z", "Z").replace("Z", "+00:00").replace("t", "T")
    return datetime.datetime.fromisoformat(t)


def expected_title(message):
    """make_title for ASCII text: words joined by one space, at most 60 characters, cut at a word with an ellipsis."""
    title, chars = "", 0
    for word in message.split():
        needed = len(word) + (1 if title else 0)
        if chars + needed > 60:
            if not title:
                title = word[:60]
            return title + "\u2026"
        title = title + " " + word if title else word
        chars += needed
    return title or "New chat"


def completed(message_id):
    """Predicate: the message_complete event of message_id (an error event, e.g. cancelled, may come before it)."""
    return lambda e: e.event == "message_complete" and e.json().get("message_id") == message_id


def q(**params):
    return urllib.parse.urlencode(params)


def h_wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            raise AssertionError("condition not met within %.0fs" % timeout)
        time.sleep(0.1)


class HistoryTests:
    """Mixed into a ChatdTestCase; the subclass provides the servers and direct DB reads."""

    backend = None

    # -- provided by the backend class --------------------------------------------
    @classmethod
    def server_env(cls, name, extra):
        raise NotImplementedError

    def db_messages(self, srv, session_id):
        """Rows of messages of the session straight from the database: dicts with message_id, role, content, status."""
        raise NotImplementedError

    def db_sessions(self, srv, session_id):
        raise NotImplementedError

    # -- set-up ---------------------------------------------------------------------
    @classmethod
    def start_history_servers(cls):
        cls.srv = cls.start_server("hist-%s" % cls.backend, env=cls.server_env("fast", FAST))
        cls.slow = cls.start_server("hist-%s-slow" % cls.backend, env=cls.server_env("slow", SLOW))

    # -- API helpers ----------------------------------------------------------------
    def sessions(self, srv, user_id, **extra):
        return self.sessions_page(srv, user_id, **extra)["sessions"]

    def sessions_page(self, srv, user_id, **extra):
        r = srv.get("/api/sessions?" + q(user_id=user_id, **extra))
        self.assertEqual(r.status, 200, "GET /api/sessions: %r" % r)
        self.assertIn("application/json", (r.header("content-type") or "").lower(), r)
        d = r.json()
        self.assertIsInstance(d.get("sessions"), list, d)
        self.assertIn("next_before", d, "the list lacks next_before: %r" % d)
        nb = d["next_before"]
        self.assertTrue(nb is None or isinstance(nb, str) and nb, "next_before: %r" % nb)
        return d

    def messages_page(self, srv, session_id, user_id, **extra):
        r = srv.get("/api/sessions/%s/messages?%s" % (session_id, q(user_id=user_id, **extra)))
        self.assertEqual(r.status, 200, "GET messages of %s (%r): %r" % (session_id, extra, r))
        d = r.json()
        self.assertIsInstance(d.get("messages"), list, d)
        self.assertIn("next_before", d, "page lacks next_before: %r" % d)
        nb = d["next_before"]
        self.assertTrue(nb is None or (isinstance(nb, str) and h.ID_RE.match(nb)), "next_before: %r" % nb)
        for m in d["messages"]:
            for f in ("message_id", "session_id", "role", "content", "token_count", "status", "created_at",
                      "metadata"):
                self.assertIn(f, m, "message lacks %r: %r" % (f, m))
            self.assertEqual(m["session_id"], session_id, m)
            self.assertIn(m["role"], ("user", "assistant", "system"), m)
            self.assertIn(m["status"], ("complete", "error", "cancelled", "incomplete"), m)
            self.assertIsInstance(m["token_count"], int, m)
            self.assertIsInstance(m["metadata"], dict, m)
            parse_time(m["created_at"])
        return d

    def all_messages(self, srv, session_id, user_id):
        return self.messages_page(srv, session_id, user_id, limit=200)["messages"]

    def wait_stored(self, srv, session_id, user_id, message_id, timeout=15.0, status=None):
        """Polls the messages API until message_id is listed (with status); returns the message."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            r = srv.get("/api/sessions/%s/messages?%s" % (session_id, q(user_id=user_id, limit=200)))
            if r.status == 200:
                last = r.json()["messages"]
                for m in last:
                    if m["message_id"] == message_id and (status is None or m["status"] == status):
                        return m
            else:
                last = r
            if time.monotonic() >= deadline:
                self.fail("message %s (status %s) not listed within %.0fs; last: %r"
                          % (message_id, status, timeout, last))
            time.sleep(0.1)

    def turn(self, srv, session_id, user_id, message, **extra):
        """One complete turn: SSE open, POST, reply streamed and checked, reply listed by the API."""
        rc, acc, c = self.run_reply(srv, session_id, user_id, message, timeout=60.0, **extra)
        c.close()
        self.wait_stored(srv, session_id, user_id, acc["message_id"], status="complete")
        return rc, acc

    def assert_error(self, resp, status, msg):
        return self.assertError(resp, status, msg=msg)

    # -- sessions ---------------------------------------------------------------------
    def test_sessions_newest_first_with_titles_and_times(self):
        srv, uid = self.srv, h.new_id("u")
        firsts = {
            "a": "Planning   the\tspring garden: tomatoes, basil and beans",
            "b": "What is the capital of Australia?",
            "c": "Short",
        }
        sids = {k: h.new_id("s" + k) for k in firsts}
        for k in ("a", "b", "c"):
            extra = {"ai_provider": "demo", "model": "demo-1"} if k == "b" else {}
            self.turn(srv, sids[k], uid, firsts[k], **extra)

        listed = self.sessions(srv, uid)
        self.assertEqual([s["session_id"] for s in listed], [sids["c"], sids["b"], sids["a"]],
                         "sessions must be newest first: %r" % listed)
        for s in listed:
            for f in ("session_id", "user_id", "title", "ai_provider", "model", "created_at", "updated_at",
                      "last_message_at"):
                self.assertIn(f, s, "session lacks %r: %r" % (f, s))
            self.assertEqual(s["user_id"], uid, s)
            k = [k for k, v in sids.items() if v == s["session_id"]][0]
            self.assertEqual(s["title"], expected_title(firsts[k]), "title from the first message's first words: %r" % s)
            created, updated, last = parse_time(s["created_at"]), parse_time(s["updated_at"]), parse_time(s["last_message_at"])
            self.assertLessEqual(created, last, s)
            self.assertLessEqual(created, updated, s)
            msgs = self.all_messages(srv, s["session_id"], uid)
            self.assertEqual(len(msgs), 2, msgs)
            newest = max(parse_time(m["created_at"]) for m in msgs)
            oldest = min(parse_time(m["created_at"]) for m in msgs)
            self.assertEqual(last, newest, "last_message_at should be the time of the newest message: %r / %r" % (s, msgs))
            self.assertLessEqual(created, oldest, s)
        b = [s for s in listed if s["session_id"] == sids["b"]][0]
        self.assertEqual((b["ai_provider"], b["model"]), ("demo", "demo-1"), "provider/model of the session: %r" % b)
        times = [parse_time(s["last_message_at"]) for s in listed]
        self.assertEqual(times, sorted(times, reverse=True), "last_message_at not descending: %r" % listed)

        # a new turn in the oldest session moves it to the top; its title stays the first message's
        before = parse_time([s for s in listed if s["session_id"] == sids["a"]][0]["last_message_at"])
        self.turn(srv, sids["a"], uid, "And what about cucumbers?")
        listed2 = self.sessions(srv, uid)
        self.assertEqual([s["session_id"] for s in listed2], [sids["a"], sids["c"], sids["b"]], listed2)
        self.assertEqual(listed2[0]["title"], expected_title(firsts["a"]), listed2[0])
        self.assertGreater(parse_time(listed2[0]["last_message_at"]), before, listed2[0])
        self.assertGreaterEqual(parse_time(listed2[0]["updated_at"]), parse_time(listed2[0]["last_message_at"]),
                                listed2[0])

        # limit
        one = self.sessions(srv, uid, limit=1)
        self.assertEqual([s["session_id"] for s in one], [sids["a"]], one)

    def test_session_pages_walk_every_session_once(self):
        srv, uid = self.srv, h.new_id("u")
        made = [h.new_id("s%d" % i) for i in range(5)]
        for sid in made:
            # Each reply stored before the next chat: a reply stored later would move its
            # session to the top of the list between the reads below.
            self.turn(srv, sid, uid, "conversation " + sid)
        whole = [s["session_id"] for s in self.sessions(srv, uid)]
        self.assertEqual(sorted(whole), sorted(made))
        walked, before, pages = [], None, 0
        while True:
            extra = {"limit": 2}
            if before:
                extra["before"] = before
            d = self.sessions_page(srv, uid, **extra)
            self.assertLessEqual(len(d["sessions"]), 2, d)
            walked += [s["session_id"] for s in d["sessions"]]
            pages += 1
            before = d["next_before"]
            if not before:
                break
            self.assertLess(pages, 5, "the cursor does not advance: %r" % d)
        self.assertEqual(walked, whole, "the pages differ from the whole list")
        self.assertEqual(pages, 3)
        # A cursor whose session was deleted meanwhile still leads on.
        first = self.sessions_page(srv, uid, limit=2)
        self.assertEqual(srv.request("DELETE", "/api/sessions/%s?%s" % (whole[1], q(user_id=uid))).status, 200)
        rest = self.sessions(srv, uid, limit=10, before=first["next_before"])
        self.assertEqual([s["session_id"] for s in rest], whole[2:])
        for bad in ("abc", "12", ".s1", "12.", "-5.s1", "12.a b", "12.s1.x", "1e3.s1", "99999999999999999999.s1"):
            self.assert_error(srv.get("/api/sessions?" + q(user_id=uid, before=bad)), 400, "sessions before=%r" % bad)

    def test_sessions_belong_to_their_user(self):
        srv = self.srv
        u1, u2, u3 = h.new_id("u"), h.new_id("u"), h.new_id("u")
        s1, s2 = h.new_id("s"), h.new_id("s")
        srv.chat_ok(s1, u1, "mine")
        srv.chat_ok(s2, u2, "yours")
        self.assertEqual([s["session_id"] for s in self.sessions(srv, u1)], [s1])
        self.assertEqual([s["session_id"] for s in self.sessions(srv, u2)], [s2])
        self.assertEqual(self.sessions(srv, u3), [], "a user without sessions gets an empty list")

    def test_title_of_long_first_message(self):
        srv, uid, sid = self.srv, h.new_id("u"), h.new_id("s")
        msg = ("The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill "
               "and wonders why anyone would jump over a dog at all")
        srv.chat_ok(sid, uid, msg)
        listed = self.sessions(srv, uid)
        self.assertEqual(len(listed), 1, listed)
        title = listed[0]["title"]
        self.assertEqual(title, expected_title(msg), "title of a long first message")
        self.assertTrue(title.endswith("\u2026"), title)
        self.assertLessEqual(len(title), 61, title)
        stem = title[:-1]
        self.assertTrue(msg.startswith(stem) and msg[len(stem)] == " ", "title not cut at a word: %r" % title)

    # -- message pages -----------------------------------------------------------------
    def test_message_pages_walk_whole_history(self):
        srv, uid, sid = self.srv, h.new_id("u"), h.new_id("s")
        sent, replies, ids = [], [], []
        for i in range(7):
            msg = "history turn %d about topic-%d" % (i, i * 7)
            rc, acc = self.turn(srv, sid, uid, msg)
            sent.append(msg)
            replies.append(rc.text)
            ids.append(acc["message_id"])
            if i == 0:
                self.assertIn("This is the first message of our conversation.", rc.text)
            else:
                self.assertIn("We have exchanged %d earlier messages in this conversation." % (2 * i), rc.text,
                              "turn %d should see the %d earlier messages as history" % (i, 2 * i))

        full = self.all_messages(srv, sid, uid)
        self.assertEqual(len(full), 14, [(m["role"], m["content"][:30]) for m in full])
        self.assertEqual([m["role"] for m in full], ["user", "assistant"] * 7, "oldest first, alternating")
        self.assertEqual([m["content"] for m in full[0::2]], sent)
        self.assertEqual([m["content"] for m in full[1::2]], replies, "stored replies differ from the streamed ones")
        self.assertEqual([m["message_id"] for m in full[1::2]], ids)
        for m in full[1::2]:
            self.assertEqual(m["status"], "complete", m)
            self.assertGreater(m["token_count"], 0, m)
            self.assertEqual(m["metadata"].get("finish_reason"), "stop", m)
            self.assertTrue(m["metadata"].get("model"), m)
        times = [parse_time(m["created_at"]) for m in full]
        self.assertEqual(times, sorted(times), "created_at not ascending")
        self.assertIsNone(self.messages_page(srv, sid, uid, limit=200)["next_before"],
                          "next_before must be null when no older messages exist")
        self.assertIsNone(self.messages_page(srv, sid, uid, limit=14)["next_before"],
                          "limit == number of messages: nothing older, next_before null")

        for limit in (1, 3, 5, 13):
            pages, before, seen = [], None, []
            for _ in range(20):
                params = {"limit": limit}
                if before:
                    params["before"] = before
                d = self.messages_page(srv, sid, uid, **params)
                page = d["messages"]
                pages.append(page)
                self.assertLessEqual(len(page), limit, d)
                self.assertTrue(page, "empty page in the middle of the walk (limit %d, before %s)" % (limit, before))
                pt = [parse_time(m["created_at"]) for m in page]
                self.assertEqual(pt, sorted(pt), "a page must be oldest first: %r" % page)
                seen = [m["message_id"] for m in page] + seen
                before = d["next_before"]
                if before is None:
                    break
                self.assertEqual(before, page[0]["message_id"], "next_before should be the oldest id of the page")
                self.assertEqual(len(page), limit, "a page with older messages left must be full")
            else:
                self.fail("cursor walk did not end (limit %d)" % limit)
            self.assertEqual(len(seen), len(set(seen)), "repeated messages in the walk (limit %d)" % limit)
            self.assertEqual(seen, [m["message_id"] for m in full],
                             "walk with limit %d is not the whole history oldest first without gaps" % limit)
            self.assertEqual(len(pages), (14 + limit - 1) // limit, "pages with limit %d" % limit)

        # before the oldest message: nothing older
        d = self.messages_page(srv, sid, uid, limit=5, before=full[0]["message_id"])
        self.assertEqual(d["messages"], [], d)
        self.assertIsNone(d["next_before"], d)
        # before a message in the middle: exactly the older ones
        d = self.messages_page(srv, sid, uid, limit=200, before=full[6]["message_id"])
        self.assertEqual([m["message_id"] for m in d["messages"]], [m["message_id"] for m in full[:6]], d)
        self.assertIsNone(d["next_before"], d)

    # -- errors -----------------------------------------------------------------------
    def test_errors_404_400(self):
        srv, owner, other, sid = self.srv, h.new_id("u"), h.new_id("u"), h.new_id("s")
        self.turn(srv, sid, owner, "private conversation")
        base = "/api/sessions/%s/messages?" % sid
        # another user's session is answered like a missing one (no existence oracle)
        self.assert_error(srv.get(base + q(user_id=other)), 404, "another user's messages")
        self.assert_error(srv.request("DELETE", "/api/sessions/%s?%s" % (sid, q(user_id=other))), 404,
                          "another user's DELETE")
        self.assertEqual(len(self.all_messages(srv, sid, owner)), 2, "a refused DELETE must not delete")
        unknown = h.new_id("nosuch")
        self.assert_error(srv.get("/api/sessions/%s/messages?%s" % (unknown, q(user_id=owner))), 404,
                          "messages of an unknown session")
        self.assert_error(srv.request("DELETE", "/api/sessions/%s?%s" % (unknown, q(user_id=owner))), 404,
                          "DELETE of an unknown session")
        for bad in ("", "a.b", "*", "a b", "x" * 129, "caf\u00e9"):
            self.assert_error(srv.get("/api/sessions?" + q(user_id=bad)), 400, "sessions user_id=%r" % bad)
            self.assert_error(srv.get(base + q(user_id=bad)), 400, "messages user_id=%r" % bad)
            self.assert_error(srv.request("DELETE", "/api/sessions/%s?%s" % (sid, q(user_id=bad))), 400,
                              "DELETE user_id=%r" % bad)
        self.assert_error(srv.get("/api/sessions"), 400, "sessions without user_id")
        self.assert_error(srv.get("/api/sessions/%s/messages" % sid), 400, "messages without user_id")
        self.assert_error(srv.request("DELETE", "/api/sessions/%s" % sid), 400, "DELETE without user_id")
        for bad in ("0", "201", "-1", "abc", "1.5", "99999999999999999999"):
            self.assert_error(srv.get("/api/sessions?" + q(user_id=owner, limit=bad)), 400, "sessions limit=%r" % bad)
            self.assert_error(srv.get(base + q(user_id=owner, limit=bad)), 400, "messages limit=%r" % bad)
        for bad in ("a.b", "x y", "*"):
            self.assert_error(srv.get(base + q(user_id=owner, before=bad)), 400, "messages before=%r" % bad)
        self.messages_page(srv, sid, owner, limit=200)
        self.messages_page(srv, sid, owner, limit=1)
        self.assertEqual(len(self.all_messages(srv, sid, owner)), 2, "still intact")

    # -- delete -----------------------------------------------------------------------
    def test_delete_session(self):
        srv, uid, sid = self.srv, h.new_id("u"), h.new_id("s")
        keep = h.new_id("s")
        self.turn(srv, sid, uid, "to be deleted")
        self.turn(srv, sid, uid, "second turn to be deleted")
        self.turn(srv, keep, uid, "to be kept")
        self.assertEqual(len(self.db_messages(srv, sid)), 4)
        r = srv.request("DELETE", "/api/sessions/%s?%s" % (sid, q(user_id=uid)))
        self.assertIn(r.status, (200, 204), "DELETE by the owner: %r" % r)
        self.assert_error(srv.get("/api/sessions/%s/messages?%s" % (sid, q(user_id=uid))), 404, "messages after DELETE")
        self.assert_error(srv.request("DELETE", "/api/sessions/%s?%s" % (sid, q(user_id=uid))), 404, "second DELETE")
        self.assertEqual([s["session_id"] for s in self.sessions(srv, uid)], [keep], "listing after DELETE")
        self.assertEqual(self.db_messages(srv, sid), [], "messages of a deleted session left in the database")
        self.assertEqual(self.db_sessions(srv, sid), [], "deleted session left in the database")
        self.assertEqual(len(self.all_messages(srv, keep, uid)), 2, "the other session is untouched")
        # the id starts afresh: a new conversation without the old history
        rc, _ = self.turn(srv, sid, uid, "starting over")
        self.assertIn("This is the first message of our conversation.", rc.text, "deleted history was used")
        self.assertEqual(len(self.all_messages(srv, sid, uid)), 2)

    def test_delete_while_streaming(self):
        srv, uid, sid = self.slow, h.new_id("u"), h.new_id("s")
        c, _ = self.open_sse(srv, sid, uid)
        # ~600 words: ~260 chunks at 150 ms, ~40 s of streaming. It can only end within the limits below if the
        # DELETE stops it.
        acc = srv.chat_ok(sid, uid, "a reply that is deleted while it streams " + " ".join("w%d" % i for i in range(600)))
        mid = acc["message_id"]
        c.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 2, 15)
        t0 = time.monotonic()
        r = srv.request("DELETE", "/api/sessions/%s?%s" % (sid, q(user_id=uid)))
        self.assertIn(r.status, (200, 204), "DELETE while streaming: %r" % r)
        # the stream ends with the session-deleted reset (or the reply ending cancelled), never completed
        try:
            evs = c.collect_until(lambda e: e.event == "reset" or (e.event == "message_complete"
                                                                   and e.json().get("message_id") == mid), 15)
        except AssertionError as e:
            self.fail("the stream of %s neither got a reset nor ended within 15 s of DELETE: %s" % (mid, e))
        last = evs[-1]
        if last.event == "reset":
            self.assertEqual(last.json(), {"session_id": sid, "reason": "session_deleted"}, last)
            self.assertTrue(c.wait_closed(10.0), "stream still open 10 s after its session_deleted reset")
        else:
            self.assertEqual(last.json().get("finish_reason"), "cancelled", "the deleted reply was completed: %r" % last)
        completes = [e.json() for e in h.reply_events(c.events, mid) if e.event == "message_complete"]
        self.assertTrue(all(d.get("finish_reason") == "cancelled" for d in completes), completes)
        chunks = [e.json() for e in h.reply_events(c.events, mid) if e.event == "chunk"]
        self.assertFalse([d for d in chunks if d["is_final"] and (d.get("metadata") or {}).get("finish_reason") == "stop"],
                         "the deleted reply streamed to its normal end")
        # the generation stopped on the worker: it took the cancel, and then no longer answers for the reply
        try:
            h_wait(lambda: "generation_cancelled message_id=%s" % mid in srv.log(400000), 15.0)
        except AssertionError:
            self.fail("the worker never cancelled %s after its session was deleted" % mid)
        # (another user's cancel is 404 whether the reply runs or not: no existence oracle)
        self.assertEqual(self.cancel(srv, mid, h.new_id("u")).status, 404)
        stopped_after = time.monotonic() - t0
        sys.stderr.write("\n[%s] stream ended by %s; worker stopped the reply %.1fs after DELETE\n"
                         % (self.id(), last.event, stopped_after))
        # and nothing brings the session back: the reply is not stored afterwards
        self.assert_error(srv.get("/api/sessions/%s/messages?%s" % (sid, q(user_id=uid))), 404,
                          "messages of the deleted session after its reply ended")
        self.assertEqual(self.sessions(srv, uid), [], "deleted session is listed again")
        self.assertEqual(self.db_messages(srv, sid), [], "the reply (or user message) was stored after DELETE")
        self.assertEqual(self.db_sessions(srv, sid), [], "the session was re-created after DELETE")
        self.assertTrue(srv.alive())

    # -- cancel -----------------------------------------------------------------------
    def cancel(self, srv, message_id, user_id):
        return srv.request("POST", "/api/chat/%s/cancel?%s" % (message_id, q(user_id=user_id)), body=b"",
                           timeout=15.0)

    def check_cancelled_stream(self, events, mid, sid):
        """chunk ids 0..n-1, exactly one final (the last) with finish_reason cancelled, then message_complete."""
        evs = h.reply_events(events, mid)
        chunks = [e.json() for e in evs if e.event == "chunk"]
        completes = [e.json() for e in evs if e.event == "message_complete"]
        errors = [e.json() for e in evs if e.event == "error"]
        self.assertTrue(chunks, "no chunks")
        self.assertEqual([c["chunk_id"] for c in chunks], list(range(len(chunks))), "chunk ids not 0..n-1")
        finals = [i for i, c in enumerate(chunks) if c["is_final"]]
        self.assertEqual(finals, [len(chunks) - 1], "exactly the last chunk is final")
        md = chunks[-1].get("metadata") or {}
        self.assertEqual(md.get("finish_reason"), "cancelled", "final chunk: %r" % chunks[-1])
        self.assertEqual(len(completes), 1, "message_complete events: %r" % completes)
        self.assertEqual(completes[0].get("finish_reason"), "cancelled", completes[0])
        self.assertEqual(evs[-1].event, "message_complete", "message_complete must come last: %r" % evs[-3:])
        for e in errors:
            self.assertEqual(e.get("code"), "cancelled", "unexpected error event: %r" % e)
        for c in chunks:
            self.assertEqual(c["session_id"], sid)
        return chunks, "".join(c["chunk"] for c in chunks)

    def test_cancel_reaches_every_device_and_stores_partial(self):
        srv, uid, sid = self.slow, h.new_id("u"), h.new_id("s")
        msg = "please write a long answer that will be cancelled halfway"
        full, _ = self.turn(self.srv, h.new_id("s"), h.new_id("u"), msg)  # the whole reply, from the fast pod
        c1, _ = self.open_sse(srv, sid, uid)
        c2, _ = self.open_sse(srv, sid, uid)
        acc = srv.chat_ok(sid, uid, msg)
        mid = acc["message_id"]
        got1 = c1.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 3, 15)
        r = self.cancel(srv, mid, uid)
        self.assertEqual(r.status, 202, "cancel of a running reply: %r" % r)
        self.assertEqual(r.json().get("message_id"), mid, r.json())
        t_cancel = time.monotonic()
        got1 += c1.collect_until(completed(mid), 15)
        got2 = c2.collect_until(completed(mid), 15)
        ended_after = time.monotonic() - t_cancel
        chunks1, text1 = self.check_cancelled_stream(got1, mid, sid)
        chunks2, text2 = self.check_cancelled_stream(got2, mid, sid)
        self.assertEqual(chunks1, chunks2, "the two devices saw different streams")
        self.assertLess(ended_after, 5.0, "the stream went on for %.1fs after the cancel was accepted" % ended_after)
        self.assertTrue(full.text.startswith(text1), "partial text is not a prefix of the reply: %r" % text1)
        self.assertLess(len(text1), len(full.text), "cancelled reply is as long as the whole reply")
        self.assertLess(len(chunks1), len(full.chunks), "cancelled reply has as many chunks as the whole one")
        # stored as cancelled with the partial text
        m = self.wait_stored(srv, sid, uid, mid, timeout=15.0)
        self.assertEqual(m["status"], "cancelled", m)
        self.assertEqual(m["role"], "assistant", m)
        self.assertEqual(m["content"], text1, "stored text differs from the streamed partial text")
        self.assertEqual(m["metadata"].get("finish_reason"), "cancelled", m)
        rows = [r for r in self.db_messages(srv, sid) if r["message_id"] == mid]
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual((rows[0]["status"], rows[0]["content"]), ("cancelled", text1), rows)
        # repeating the cancel after the end (a client that lost the first answer): the same answer,
        # and still nobody else's to cancel
        again = self.cancel(srv, mid, uid)
        self.assertEqual((again.status, again.json().get("status")), (202, "cancelling"), again)
        self.assert_error(self.cancel(srv, mid, h.new_id("u")), 404, "another user's cancel after the end")
        # the session goes on normally
        rc, _ = self.turn(self.slow, sid, uid, "next question")
        self.assertIn("We have exchanged 2 earlier messages", rc.text)

    def test_cancel_by_another_user_is_not_found(self):
        srv, uid, other, sid = self.slow, h.new_id("u"), h.new_id("u"), h.new_id("s")
        c, _ = self.open_sse(srv, sid, uid)
        acc = srv.chat_ok(sid, uid, "not yours to cancel")
        mid = acc["message_id"]
        c.collect_until(lambda e: e.event == "chunk" and e.json().get("chunk_id") == 1, 15)
        self.assert_error(self.cancel(srv, mid, other), 404, "another user's cancel of a running reply")
        self.assert_error(srv.request("POST", "/api/chat/%s/cancel" % mid, body=b""), 400, "cancel without user_id")
        self.assert_error(srv.request("POST", "/api/chat/%s/cancel?%s" % (mid, q(user_id="a.b")), body=b""), 400,
                          "cancel with a bad user_id")
        evs = c.collect_until(completed(mid), 30)
        rc = h.ReplyCheck(self, c.events, mid, sid)  # finished normally: finish_reason stop
        m = self.wait_stored(srv, sid, uid, mid, status="complete")
        self.assertEqual(m["content"], rc.text)
        self.assertTrue(evs)
        self.assert_error(self.cancel(srv, mid, uid), 404, "owner's cancel after the reply finished")
        self.assert_error(self.cancel(srv, h.new_id("msg"), uid), 404, "cancel of an unknown message")


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------

class SqliteHistoryTest(HistoryTests, h.ChatdTestCase):
    backend = "sqlite"

    @classmethod
    def setUpClass(cls):
        cls.start_history_servers()

    @classmethod
    def server_env(cls, name, extra):
        return dict(extra)

    def db_messages(self, srv, session_id):
        return srv.db_query("SELECT message_id, role, content, status FROM messages WHERE session_id = ? "
                            "ORDER BY created_at, message_id", (session_id,))

    def db_sessions(self, srv, session_id):
        return srv.db_query("SELECT * FROM chat_sessions WHERE session_id = ?", (session_id,))


class PostgresHistoryTest(HistoryTests, h.ChatdTestCase):
    backend = "postgres"
    pg = None
    dbs = {}

    @classmethod
    def setUpClass(cls):
        cls.pg = pg_infra.PostgresServer(name="pg-history")
        try:
            cls.pg.start()
            cls.dbs = {}
            cls.start_history_servers()
        except BaseException:
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.pg.cleanup()

    @classmethod
    def server_env(cls, name, extra):
        db = cls.pg.create_database()
        cls.dbs[name] = db
        env = cls.pg.chatd_env(db)
        env.update(extra)
        return env

    def db_of(self, srv):
        return self.dbs["slow" if srv is self.slow else "fast"]

    def db_messages(self, srv, session_id):
        return self.pg.query(self.db_of(srv), "SELECT message_id, role, content, status FROM messages "
                             "WHERE session_id = :'sid' ORDER BY created_at, message_id", sid=session_id)

    def db_sessions(self, srv, session_id):
        return self.pg.query(self.db_of(srv), "SELECT * FROM chat_sessions WHERE session_id = :'sid'", sid=session_id)

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before and self.pg is not None:
            sys.stderr.write("\n----- PostgreSQL log (test %s failed) -----\n%s\n" % (self.id(), self.pg.log_tail(4000)))
        return out


if __name__ == "__main__":
    unittest.main()
