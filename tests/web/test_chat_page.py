"""The chat page in a real browser (headless Chromium) against a real embedded chatd.

What a person does: send a message and watch the reply stream in; reload in the middle of a reply;
follow one conversation in two windows; stop a reply; read Markdown and a hostile reply; delete a
conversation another window shows; keep the keyboard focus in the message box; find the
conversations again after chatd restarts, and a reply lost in a crash ends instead of running for
good; see the error banner when the server says 503 or 429.
Every assertion about text compares the page with what the history API stores.

Run (from tests/web): CHATD_BIN=../../build/chatd /usr/bin/python3 -m unittest -v test_chat_page
"""

import json
import os
import subprocess
import time
import unittest
import uuid

from browser import Browser, Keys, StoredHistory, normalize, wait_until  # first: it puts tests/e2e on the path
import harness
from harness import ChatdServer, ChatdTestCase

# The demo reply (about 32 chunks) at this pace lasts about 6 s: long enough to look at, stop or
# reload in the middle of, on a loaded machine.
SLOW_DEMO = {"WORKER_DEMO_CHUNK_DELAY": "200ms", "WORKER_DEMO_WORDS_PER_CHUNK": "3"}
SCREENSHOT_DIR = os.environ.get("WEB_SCREENSHOT_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(harness.chatd_bin())), "screenshots")


def chatd_knows(setting):
    """True when this chatd has the setting (features other branches are adding)."""
    out = subprocess.run([harness.chatd_bin(), "--help"], capture_output=True, text=True, timeout=30)
    return setting in out.stdout


def drawer_settled(page, testid):
    """True once the drawer is open and done sliding in, and a tap at the middle of its
    control `testid` hits that control. Visible is not enough: a click while the drawer
    still slides can land off the screen (chromedriver: element not interactable)."""
    return page.find("new-chat").is_displayed() and page.js(
        "var t = getComputedStyle(document.getElementById('sidebar')).transform;"
        "if (t !== 'none' && t !== 'matrix(1, 0, 0, 1, 0, 0)') return false;"
        "var e = document.querySelector('[data-testid=\"' + arguments[0] + '\"]');"
        "var r = e.getBoundingClientRect();"
        "var hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);"
        "return !!hit && e.contains(hit);", testid)


class PageTestCase(ChatdTestCase):
    """A chatd (class-wide) and a browser per test; the browser's console must stay clean."""

    server_env = SLOW_DEMO

    @classmethod
    def setUpClass(cls):
        cls.server = cls.start_server(cls.__name__, env=cls.server_env)

    def setUp(self):
        super().setUp()
        self.server = self.chatd_for_test()
        self.user = "ada-" + uuid.uuid4().hex[:6]
        self.history = StoredHistory(self.server.port, self.user)
        self.browser = Browser()
        self.page = self.browser.page("http://127.0.0.1:%d" % self.server.port)

    def chatd_for_test(self):
        return type(self).server

    def tearDown(self):
        try:
            problems = self.browser.console_problems()
        finally:
            self.browser.quit()
            super().tearDown()
        self.assertEqual(problems, [], "the page logged errors (script, CSP or Trusted Types)")

    def assert_same_as_stored(self, shown, stored, context):
        self.assertEqual(normalize(shown["text"]), normalize(stored["content"]),
                         "%s: the page shows another text than the one stored" % context)


class ChatPageTest(PageTestCase):

    def test_reply_streams_in_and_ends_as_stored(self):
        page = self.page.open(user=self.user)
        # An earlier exchange with some Markdown, so that the screenshot shows what the page does.
        page.wait_status(page.send("Show me **Markdown**: `inline code`, *emphasis* and a [link](https://example.org)"),
                         "complete")
        reply_id = page.send("How do streams survive a reload?")
        session_id = page.session_id()
        self.assertIsNotNone(session_id, "the page did not put the conversation in its URL")

        # The text grows while it streams; the screenshot for the README is taken meanwhile.
        seen = []
        def grown_twice():
            m = page.message(reply_id)
            if m and m["status"] == "streaming" and m["text"] and (not seen or seen[-1] != m["text"]):
                seen.append(m["text"])
            return len(seen) >= 3
        wait_until("the reply to grow three times", grown_twice)
        page.screenshot(os.path.join(SCREENSHOT_DIR, "chat-page-mid-stream.png"))
        more, final = page.watch_growth(reply_id)
        seen += more
        self.assertGreaterEqual(len(set(seen)), 3, "the reply did not grow over several observations: %r" % seen)
        for shorter, longer in zip(seen, seen[1:]):
            self.assertTrue(normalize(longer).startswith(normalize(shorter)),
                            "streamed text changed instead of growing: %r -> %r" % (shorter, longer))
        self.assertEqual(final["status"], "complete")

        stored = self.history.wait_message(session_id, reply_id)
        self.assertEqual(stored["status"], "complete")
        self.assert_same_as_stored(final, stored, "finished reply")
        shown = page.messages()
        self.assertEqual([m["role"] for m in shown], ["user", "assistant"] * 2)
        self.assertEqual(normalize(shown[2]["text"]), "How do streams survive a reload?")
        self.assertEqual([m["id"] for m in shown], [m["message_id"] for m in self.history.messages(session_id)],
                         "the messages do not carry their stored ids, or are not in the stored order")
        # The conversation is in the list, under its title.
        wait_until("the conversation in the list", lambda: any(s["id"] == session_id for s in page.session_items()))
        self.assertTrue(page.visible("send") and not page.visible("stop"), "send/stop after the reply ended")

    def test_reload_in_the_middle_of_a_reply_continues_without_gap_or_repeat(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Please keep talking while I reload the page")
        session_id = page.session_id()
        before = wait_until("some of the reply before the reload",
                            lambda: (lambda m: m if m and m["status"] == "streaming" and len(m["text"]) > 40 else None)(
                                page.message(reply_id)))
        page.reload()
        # Back at once with what it had, then the rest.
        after = page.wait_status(reply_id, ("streaming", "complete"))
        self.assertEqual(after["status"], "streaming",
                         "the reply ended before the page came back: nothing was resumed (make the demo slower)")
        self.assertTrue(normalize(after["text"]).startswith(normalize(before["text"])),
                        "after the reload the page lost text it had: %r then %r" % (before["text"], after["text"]))
        seen, final = page.watch_growth(reply_id)
        self.assertGreaterEqual(len(set(seen)), 2, "the reply did not go on streaming after the reload")
        self.assertEqual(final["status"], "complete")
        stored = self.history.wait_message(session_id, reply_id)
        self.assert_same_as_stored(final, stored, "reply resumed after a reload")
        self.assertEqual([m["role"] for m in page.messages()], ["user", "assistant"], "a message was shown twice")

    def test_a_second_window_shows_the_reply_the_first_asked_for(self):
        first = self.page.open(user=self.user)
        opening = first.send("First message, to create the conversation")
        first.wait_status(opening, "complete")
        session_id = first.session_id()

        second = self.browser.new_window(first.base_url).open(session_id)  # same browser: already signed in
        wait_until("the second window to show the conversation",
                   lambda: len(second.messages()) == 2 and second.messages()[1]["status"] == "complete")

        reply_id = first.send("Second message, watched from two windows")
        seen_second, final_second = second.watch_growth(reply_id)
        self.assertTrue(seen_second, "the second window never showed the reply while it streamed")
        final_first = first.wait_status(reply_id, "complete")
        stored = self.history.wait_message(session_id, reply_id)
        self.assert_same_as_stored(final_first, stored, "first window")
        self.assert_same_as_stored(final_second, stored, "second window")
        # The second window also shows the message that started the reply.
        wait_until("the second window to show the user's message",
                   lambda: [normalize(m["text"]) for m in second.messages() if m["role"] == "user"][-1:]
                   == ["Second message, watched from two windows"])
        self.assertEqual([m["role"] for m in second.messages()], ["user", "assistant", "user", "assistant"])

    def test_stop_ends_the_reply_as_cancelled_and_so_it_is_stored(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Say a lot, I will stop you")
        session_id = page.session_id()
        wait_until("some of the reply", lambda: (lambda m: m and m["status"] == "streaming" and len(m["text"]) > 20)(
            page.message(reply_id)))
        wait_until("the stop button", lambda: page.visible("stop"))
        self.assertFalse(page.visible("send"), "send is offered while a reply runs")
        page.find("stop").click()
        final = page.wait_status(reply_id, ("cancelled", "complete", "error"))
        self.assertEqual(final["status"], "cancelled", "the reply was not stopped: %r" % final)
        self.assertIn("Stopped", final["note"])
        stored = self.history.wait_message(session_id, reply_id)
        self.assertEqual(stored["status"], "cancelled")
        self.assert_same_as_stored(final, stored, "stopped reply")
        self.assertFalse(stored["content"].rstrip().endswith("instead of this one."),
                         "the stopped reply went on to its end: %r" % stored["content"])
        wait_until("send to come back", lambda: page.visible("send") and not page.visible("stop"))

    def test_markdown_renders_and_a_hostile_reply_is_text_that_runs_nothing(self):
        page = self.page.open(user=self.user)
        payload = ('Make this **bold** and `code`, then <img src=x onerror="window.__pwned=1"> '
                   '<script>window.__pwned=2</script> [link](javascript:window.__pwned=3)')
        reply_id = page.send(payload)
        final = page.wait_status(reply_id, "complete")
        self.assertIn("<strong>bold</strong>", final["html"], "**bold** did not become <strong>")
        self.assertIn("<code>code</code>", final["html"])
        # The demo reply quotes the message: the markup is there as text, not as elements.
        self.assertIn('<img src=x onerror="window.__pwned=1">', final["text"])
        self.assertIn("<script>window.__pwned=2</script>", final["text"])
        counts = page.js("""
            var body = document.querySelector('[data-message-id="' + arguments[0] + '"] [data-testid="message-body"]');
            return {img: body.querySelectorAll('img').length, script: body.querySelectorAll('script').length,
                    js_links: Array.from(body.querySelectorAll('a')).filter(function (a) {
                      return (a.getAttribute('href') || '').toLowerCase().indexOf('javascript:') === 0; }).length,
                    pwned: window.__pwned === undefined ? null : window.__pwned};""", reply_id)
        self.assertEqual(counts, {"img": 0, "script": 0, "js_links": 0, "pwned": None})
        # Trusted Types are enforced: HTML from a plain string is refused, whoever assigns it.
        refused = page.js("""
            try { document.createElement('div').innerHTML = '<b>x</b>'; return false; }
            catch (e) { return e instanceof TypeError; }""")
        self.assertTrue(refused, "the Content-Security-Policy does not enforce Trusted Types")
        self.browser.expect_console("TrustedHTML")
        # The user's own message is plain text too.
        self.assertEqual(normalize(page.messages()[0]["text"]), normalize(payload))
        page.find("new-chat").click()  # and the hostile conversation title is text in the list
        wait_until("the list to show the hostile title",
                   lambda: any("<img" in s["title"] for s in page.session_items()))
        self.assertIsNone(page.js("return window.__pwned === undefined ? null : window.__pwned"))

    def test_an_image_from_elsewhere_is_a_link_the_page_never_fetches(self):
        page = self.page.open(user=self.user)
        own = "s_img_" + uuid.uuid4().hex[:8]
        reply_id = page.send("See ![a chart](https://images.example.invalid/chart.png?q=1&r=2) here, "
                             "![own](/api/sse?session_id=%s&user_id=%s) and "
                             "[![inner](https://images.example.invalid/p.png)](https://example.invalid/outer)"
                             % (own, self.user))
        page.wait_status(reply_id, "complete")
        shown = page.js("""
            var body = document.querySelector('[data-message-id="' + arguments[0] + '"] [data-testid="message-body"]');
            return {img: body.querySelectorAll('img').length,
                    links: Array.from(body.querySelectorAll('a.image-link')).map(function (a) {
                      return [a.getAttribute('href'), a.textContent, a.rel]; })};""", reply_id)
        self.assertEqual(shown["img"], 0, "the page loads images from anywhere a reply names")
        self.assertEqual([(href, text) for href, text, _ in shown["links"]],
                         [("https://images.example.invalid/chart.png?q=1&r=2", "Image: a chart"),
                          ("/api/sse?session_id=%s&user_id=%s" % (own, self.user), "Image: own")])
        for _, _, rel in shown["links"]:
            self.assertIn("noopener", rel)
        outer = page.js("""
            var body = document.querySelector('[data-message-id="' + arguments[0] + '"] [data-testid="message-body"]');
            return Array.from(body.querySelectorAll('a[href="https://example.invalid/outer"]')).map(function (a) {
              return [a.textContent, a.querySelectorAll('a').length]; });""", reply_id)
        self.assertEqual(outer, [["Image: inner", 0]], "an image inside a link")
        self.assertNotIn(own, [s["session_id"] for s in self.history.sessions()],
                         "an image naming chatd's stream opened one")
        # tearDown: no Content-Security-Policy error in the console either.

    def test_enter_sends_and_shift_enter_starts_a_new_line(self):
        from browser import Keys
        page = self.page.open(user=self.user)
        composer = page.find("composer")
        composer.click()
        composer.send_keys("first line")
        composer.send_keys(Keys.SHIFT, Keys.ENTER)
        composer.send_keys("second line")
        self.assertEqual(page.messages(), [], "Shift+Enter sent the message")
        self.assertEqual(composer.get_attribute("value"), "first line\nsecond line")
        composer.send_keys(Keys.ENTER)
        wait_until("the message to be sent", lambda: len(page.messages()) >= 1)
        self.assertEqual(page.messages()[0]["text"], "first line\nsecond line")
        self.assertEqual(composer.get_attribute("value"), "")
        reply = wait_until("the reply", lambda: next((m for m in page.messages() if m["role"] == "assistant" and m["id"]), None))
        page.wait_status(reply["id"], "complete")

    def test_conversation_list_newest_first_open_and_delete(self):
        page = self.page.open(user=self.user)
        ids = []
        for text in ("Older conversation", "Newer conversation"):
            page.find("new-chat").click()
            wait_until("an empty conversation", lambda: page.messages() == [])
            page.wait_status(page.send(text), "complete")
            ids.append(page.session_id())
        wait_until("both conversations listed, newest first",
                   lambda: [s["id"] for s in page.session_items()] == ids[::-1])
        self.assertEqual([s["title"] for s in page.session_items()], ["Newer conversation", "Older conversation"])
        page.js("""document.querySelector('[data-session-id="' + arguments[0] + '"] .session-open').click();""", ids[0])
        wait_until("the older conversation to open", lambda: page.session_id() == ids[0] and page.messages()
                   and normalize(page.messages()[0]["text"]) == "Older conversation")
        delete = page.js("""return document.querySelector('[data-session-id="' + arguments[0] + '"] [data-testid="session-delete"]');""", ids[0])
        delete.click()
        delete.click()  # the second click confirms
        wait_until("the deleted conversation to leave the list", lambda: [s["id"] for s in page.session_items()] == [ids[1]])
        self.assertEqual([s["session_id"] for s in self.history.sessions()], [ids[1]])
        wait_until("the page to leave the deleted conversation", lambda: page.session_id() is None and page.messages() == [])

    def test_conversations_past_the_first_hundred_are_a_click_away_and_stay_listed(self):
        port = self.server.port
        for _ in range(103):
            r = harness.http_request(port, "POST", "/api/sessions", json.dumps({"user_id": self.user}),
                                     {"Content-Type": "application/json"})
            self.assertEqual(r.status, 201, r)
        stored = [s["session_id"] for s in self.history.sessions(limit=200)]
        page = self.page.open(user=self.user)
        wait_until("the newest hundred", lambda: len(page.session_items()) == 100)
        self.assertTrue(page.visible("older-sessions"), "no way to reach the older conversations")
        page.find("older-sessions").click()
        wait_until("all 103", lambda: len(page.session_items()) == 103)
        self.assertEqual(page.js("return document.activeElement.closest('li') && "
                                 "document.activeElement.closest('li').dataset.sessionId"), stored[100],
                         "the focus went with the hidden button instead of to the first conversation it added")
        self.assertEqual([s["id"] for s in page.session_items()], stored)
        self.assertFalse(page.visible("older-sessions"), "the button stays when everything is listed")
        # The oldest gets a message: it moves to the top, and the list still holds all of them once.
        oldest = stored[-1]
        page.js("document.querySelector('li[data-session-id=\"' + arguments[0] + '\"] .session-open').click()", oldest)
        wait_until("the oldest to open", lambda: page.session_id() == oldest)
        page.wait_status(page.send("Back to the oldest"), "complete")
        wait_until("the oldest at the top", lambda: page.session_items()[0]["id"] == oldest)
        ids = [s["id"] for s in page.session_items()]
        self.assertEqual(ids, [oldest] + stored[:-1])
        self.assertFalse(page.visible("older-sessions"))

    def test_a_conversation_opened_by_link_past_the_listed_hundred_is_named(self):
        port = self.server.port
        first = self.page.open(user=self.user)
        first.wait_status(first.send("Plans for the garden"), "complete")
        linked = first.session_id()
        for _ in range(100):  # newer conversations push it past the first page of the list
            r = harness.http_request(port, "POST", "/api/sessions", json.dumps({"user_id": self.user}),
                                     {"Content-Type": "application/json"})
            self.assertEqual(r.status, 201, r)
        page = self.page.open(session_id=linked, user=self.user)
        wait_until("the newest hundred", lambda: len(page.session_items()) == 100)
        self.assertNotIn(linked, [s["id"] for s in page.session_items()])
        wait_until("its history", lambda: len(page.messages()) == 2)
        wait_until("its title", lambda: page.js("return document.getElementById('chat-title').textContent")
                   == "Plans for the garden")
        self.assertEqual(self.browser.driver.title, "Plans for the garden · Chat")

    def test_a_conversation_deleted_in_another_window_is_said_so_and_not_made_again(self):
        first = self.page.open(user=self.user)
        first.wait_status(first.send("Soon deleted"), "complete")
        doomed = first.session_id()
        first.find("new-chat").click()
        wait_until("an empty conversation", lambda: first.messages() == [])
        first.wait_status(first.send("Kept"), "complete")
        kept = first.session_id()
        second = self.browser.new_window(first.base_url).open(doomed)  # same browser: already signed in
        wait_until("the second window to show the conversation", lambda: len(second.messages()) == 2)
        third = self.browser.new_window(first.base_url).open(kept)
        wait_until("the third window to list both", lambda: {s["id"] for s in third.session_items()} == {doomed, kept})

        delete = first.js("""return document.querySelector('[data-session-id="' + arguments[0] + '"] [data-testid="session-delete"]');""", doomed)
        delete.click()
        delete.click()  # the second click confirms
        wait_until("the second window to say the conversation was deleted",
                   lambda: (lambda b: b[0] and "deleted" in b[2])(second.banner()))
        self.assertIsNone(second.session_id())
        # The third window's list was loaded before the delete: opening the conversation from it
        # says it was deleted instead of making it again, empty.
        third.js("""document.querySelector('[data-session-id="' + arguments[0] + '"] .session-open').click();""", doomed)
        wait_until("the third window to say the conversation was deleted",
                   lambda: (lambda b: b[0] and "deleted" in b[2])(third.banner()))
        wait_until("the third window to leave it", lambda: third.session_id() is None)
        self.assertEqual([s["session_id"] for s in self.history.sessions()], [kept])

    def test_the_message_box_keeps_the_focus_when_send_and_stop_hide(self):
        page = self.page.open(user=self.user)
        focused = lambda: page.js("return document.activeElement && document.activeElement.dataset.testid")
        page.find("composer").send_keys("Say a lot, I will stop you")
        page.find("send").click()
        wait_until("the stop button", lambda: page.visible("stop"))
        self.assertEqual(focused(), "composer", "the focus went with the hidden send button")
        page.find("stop").click()
        wait_until("send to come back", lambda: page.visible("send") and not page.visible("stop"))
        self.assertEqual(focused(), "composer", "the focus went with the hidden stop button")
        self.assertTrue(page.js("""return Array.from(document.querySelectorAll('[data-testid="message-body"]'))
                                   .every(function (b) { return b.dir === 'auto'; });"""),
                        "message bodies take their direction from their text (Arabic, Hebrew)")

    def test_a_paste_over_the_length_limit_is_kept_whole_and_said_too_long(self):
        page = self.page.open(user=self.user)
        composer = page.find("composer")
        composer.click()
        # Input.insertText is what a paste or an input method does: a textarea's maxlength would cut it.
        self.browser.driver.execute_cdp_cmd("Input.insertText", {"text": "a" * 32005})
        self.assertEqual(page.js("return document.getElementById('composer').value.length"), 32005,
                         "the pasted text was cut")
        wait_until("the length note", lambda: page.visible("composer-limit"))
        self.assertIn("5 characters over the limit of 32,000", page.find("composer-limit").text)
        self.assertEqual(composer.get_attribute("aria-invalid"), "true")
        self.assertFalse(page.find("send").is_enabled(), "Send is on for a message the server refuses")
        composer.send_keys(Keys.ENTER)
        time.sleep(0.5)
        self.assertEqual(page.messages(), [], "a message over the limit went out")
        self.assertFalse(page.banner()[0], "the server was asked anyway: %r" % (page.banner(),))
        composer.send_keys(Keys.BACKSPACE * 5)
        wait_until("the length note to go", lambda: not page.visible("composer-limit"))
        self.assertTrue(page.find("send").is_enabled())
        self.assertIsNone(composer.get_attribute("aria-invalid"))

    def test_phone_sized_screen(self):
        self.browser.driver.set_window_size(390, 844)
        page = self.page.open(user=self.user)
        page.wait_status(page.send("Hello from a phone"), "complete")
        self.assertFalse(page.find("new-chat").is_displayed(), "the conversation list covers a phone screen")
        toggle = self.browser.driver.find_element("id", "menu-toggle")
        self.assertTrue(toggle.is_displayed())
        toggle.click()
        wait_until("the conversation list to slide in", lambda: page.find("new-chat").is_displayed())
        self.assertEqual(toggle.get_attribute("aria-expanded"), "true")
        wait_until("the conversation in the drawer", lambda: len(page.session_items()) == 1)
        width = page.js("return document.documentElement.scrollWidth")
        self.assertLessEqual(width, 390, "the page is wider than the phone")
        # The drawer covers the conversation: the keyboard stays in it (or goes on to the
        # browser's own controls, the body here, as from a modal dialog).
        from browser import ActionChains, Keys
        in_drawer = ("var a = document.activeElement;"
                     "return a === document.body || document.getElementById('sidebar').contains(a)")
        for i in range(10):
            self.assertTrue(page.js(in_drawer), "Tab %d left the open drawer for %r" % (
                i, page.js("return document.activeElement.outerHTML.slice(0, 80)")))
            ActionChains(self.browser.driver).send_keys(Keys.TAB).perform()
        ActionChains(self.browser.driver).send_keys(Keys.ESCAPE).perform()
        wait_until("Escape to close the drawer", lambda: not page.find("new-chat").is_displayed())
        self.assertEqual(page.js("return document.activeElement.id"), "menu-toggle")
        self.assertFalse(page.js("return document.getElementById('chat').inert"), "the closed drawer left the chat inert")
        # Without a keyboard (a phone's screen reader), the drawer's own button closes it.
        toggle.click()
        wait_until("the drawer to open", lambda: drawer_settled(page, "sidebar-close"))
        page.find("sidebar-close").click()
        wait_until("the close button to close the drawer", lambda: not page.find("new-chat").is_displayed())
        self.assertEqual(page.js("return document.activeElement.id"), "menu-toggle")
        # A screen that grows wide shows the list beside the conversation, which must take input again.
        toggle.click()
        wait_until("the drawer to open again", lambda: page.find("new-chat").is_displayed())
        self.browser.driver.set_window_size(1200, 844)
        wait_until("the wide layout to let go of the drawer",
                   lambda: not page.js("return document.getElementById('chat').inert"))
        page.find("composer").click()
        self.assertEqual(page.js("return document.activeElement.id"), "composer")
        self.browser.driver.set_window_size(390, 844)
        toggle.click()
        wait_until("the drawer to open once more", lambda: drawer_settled(page, "new-chat"))
        page.find("new-chat").click()
        wait_until("the drawer to close", lambda: not page.find("new-chat").is_displayed())
        self.assertEqual(page.js("return document.activeElement.id"), "composer")

    def test_page_has_labels_for_screen_readers(self):
        page = self.page.open(user=self.user)
        unlabelled = page.js("""
            return Array.from(document.querySelectorAll('button, textarea, input, select')).filter(function (e) {
              if (e.closest('[hidden]') || e.type === 'hidden') return false;
              var label = e.getAttribute('aria-label') || (e.labels && e.labels.length && e.labels[0].textContent)
                          || e.textContent;
              return !label || !label.trim();
            }).map(function (e) { return e.outerHTML.slice(0, 120); });""")
        self.assertEqual(unlabelled, [], "controls without an accessible name")
        # Keyboard only: from the new-chat button, Tab reaches the message box.
        from browser import ActionChains, Keys
        page.find("new-chat").click()
        def composer_focused():
            if page.js("return document.activeElement && document.activeElement.dataset.testid") == "composer":
                return True
            ActionChains(self.browser.driver).send_keys(Keys.TAB).perform()
            return False
        wait_until("Tab to reach the message box", composer_focused, timeout=20, interval=0.05)


class OwnChatdPageTest(PageTestCase):
    """Each test starts its own chatd, and may start it again on the same database and port."""

    @classmethod
    def setUpClass(cls):
        pass

    def chatd_for_test(self):
        return self.new_server("before-restart", env=self.server_env)

    def restart(self):
        old = self.server
        restarted = ChatdServer(name="restarted", env=self.server_env, db_path=old.db_path)
        self.local_servers.append(restarted)
        restarted.spawn(port=old.port)
        restarted.wait_healthy()
        return restarted


class RestartTest(OwnChatdPageTest):
    """chatd stops and starts again on the same database and port, the page stays open."""

    def test_conversations_are_listed_after_a_restart_and_a_dead_server_is_said_so(self):
        page = self.page.open(user=self.user)
        ids = []
        for text in ("Kept across restarts", "Also kept"):
            page.find("new-chat").click()
            wait_until("an empty conversation", lambda: page.messages() == [])
            page.wait_status(page.send(text), "complete")
            ids.append(page.session_id())
        old = self.server
        self.assertEqual(old.stop(), 0)
        shown, kind, text = wait_until("the banner to say the server is gone",
                                       lambda: (lambda b: b if b[0] else None)(page.banner()))
        self.assertIn(kind, ("offline", "unavailable"), text)
        self.assertIn("server", text.lower())

        restarted = self.restart()
        wait_until("the banner to go once the stream is back", lambda: not page.banner()[0])
        page.reload()
        wait_until("both conversations listed after the restart",
                   lambda: [s["id"] for s in page.session_items()] == ids[::-1])
        self.assertEqual(normalize(page.messages()[0]["text"]), "Also kept")
        page.wait_status(page.messages()[1]["id"], "complete")
        self.assertEqual(restarted.stop(), 0)

    def kill_mid_reply_and_restart(self, page):
        """Sends a message, kills chatd (SIGKILL) while the reply streams, starts it again on the same
        port and database: the reply is lost with the in-process worker. Returns the reply's id."""
        reply_id = page.send("Tell me a long story")
        wait_until("some of the reply", lambda: (lambda m: m and m["status"] == "streaming" and len(m["text"]) > 20)(
            page.message(reply_id)))
        self.server.kill()
        self.restart()
        return reply_id

    def assert_lost_and_sendable(self, page, reply_id, timeout):
        final = page.wait_status(reply_id, ("complete", "cancelled", "error"), timeout=timeout)
        self.assertEqual(final["status"], "error", final)
        self.assertIn("stopped arriving", final["note"])
        wait_until("send to come back", lambda: page.visible("send") and not page.visible("stop"))
        page.wait_status(page.send("Are you back?"), "complete")

    def test_a_reply_lost_in_a_crash_ends_on_its_own_and_the_user_can_send_again(self):
        page = self.page.open(user=self.user)
        reply_id = self.kill_mid_reply_and_restart(page)
        # The restarted chatd cannot serve the stream's cursor (reset) and never sends the reply again.
        self.assert_lost_and_sendable(page, reply_id, timeout=60)

    def test_stopping_a_reply_lost_in_a_crash_ends_it_at_once(self):
        page = self.page.open(user=self.user)
        reply_id = self.kill_mid_reply_and_restart(page)
        wait_until("the stream to be back", lambda: not page.banner()[0], timeout=30)
        wait_until("the stop button", lambda: page.visible("stop"))
        page.find("stop").click()  # the server answers 404: it runs no such reply
        self.assert_lost_and_sendable(page, reply_id, timeout=15)


class ShutdownTest(OwnChatdPageTest):
    """chatd stops with SIGTERM while a reply runs past SERVER_SHUTDOWN_TIMEOUT, then starts again."""

    server_env = dict(SLOW_DEMO, SERVER_SHUTDOWN_TIMEOUT="1s")

    def test_a_reply_cut_by_shutdown_says_so_and_a_message_sent_at_once_after_the_restart_streams(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Tell me a long story")
        wait_until("some of the reply", lambda: (lambda m: m and m["status"] == "streaming" and len(m["text"]) > 20)(
            page.message(reply_id)))
        self.assertEqual(self.server.stop(), 0)
        cut = page.wait_status(reply_id, "error")
        self.assertIn("restarted before this reply finished", cut["note"])
        self.restart()
        # At once, before the page's stream is back: the message waits for it, and its reply streams in.
        second = page.send("Are you back?")
        seen, final = page.watch_growth(second)
        self.assertEqual(final["status"], "complete", final)
        self.assertGreaterEqual(len(seen), 2, "the reply did not stream in, it appeared whole: %r" % seen)
        # After a reload the stored reply says why it is cut short.
        page.reload()
        shown = page.wait_status(reply_id, "error")
        self.assertIn("restarted before this reply finished", shown["note"])
        self.assertEqual(normalize(shown["text"]), normalize(cut["text"]))


class LateJoinTest(PageTestCase):
    """A script posted many exchanges with no stream open: the page's first stream is sent the
    replies of the last 30 s (late join), more than the newest page of history holds."""

    server_env = {"WORKER_DEMO_CHUNK_DELAY": "0ms", "RATE_LIMIT_CHAT_PER_MINUTE": "0",
                  "RATE_LIMIT_RUNNING_REPLIES": "0"}

    def test_replies_older_than_the_history_shown_stay_out_of_the_newest_page(self):
        session_id = "late-" + uuid.uuid4().hex[:8]
        replies = []
        started = time.monotonic()
        for i in range(30):  # 60 messages: the newest page holds 50
            replies.append(self.server.chat_ok(session_id, self.user, "question %d" % i)["message_id"])
            self.history.wait_message(session_id, replies[-1])
        page = self.page.open(session_id, user=self.user)
        wait_until("the newest page of history", lambda: len(page.messages()) >= 50)
        self.assertLess(time.monotonic() - started, 25, "the oldest replies left the late-join window (30 s)")
        # The late join goes to one stream: once the page's is open, a later one gets none of it.
        wait_until("the page's stream", lambda: self.server.health()["active_connections"] >= 1)
        probe = self.server.sse(session_id, self.user)
        try:
            probe.connected()
            late = [e for e in probe.collect_for(1.0) if e.event == "chunk"]
        finally:
            probe.close()
        self.assertEqual(late, [], "the late join went to a later stream, not to the page's")
        shown = page.messages()
        self.assertEqual(shown[-1]["id"], replies[-1], "a reply was put after the newest one: %r"
                         % [m["id"] for m in shown[-6:]])
        self.assertEqual(normalize(shown[-2]["text"]), "question 29")
        self.assertEqual(len(shown), 50, "older replies were added to the newest page")


class UnavailableTest(PageTestCase):
    """A chatd whose message bus is unreachable answers POST /api/chat with 503 (a real answer:
    NATS_URL names a port where nothing listens)."""

    @classmethod
    def setUpClass(cls):
        cls.server_env = dict(SLOW_DEMO, NATS_URL="nats://127.0.0.1:%d" % harness.free_port(),
                              NATS_RECONNECT_WAIT="10s")
        super().setUpClass()

    def test_503_shows_the_banner_with_the_wait_and_keeps_the_message(self):
        page = self.page.open(user=self.user)
        page.type_and_send("Is anybody there?")
        shown, kind, text = wait_until("the error banner", lambda: (lambda b: b if b[0] else None)(page.banner()))
        self.assertEqual(kind, "unavailable", text)
        self.assertRegex(text, r"[Tt]ry again in \d+ seconds?")
        self.assertTrue(page.find("error-banner").is_displayed())
        self.assertEqual(page.find("composer").get_attribute("value"), "Is anybody there?",
                         "the message that was not sent is gone")
        self.assertEqual([m for m in page.messages() if m["role"] == "user"], [], "an unsent message is shown as sent")


@unittest.skipUnless(chatd_knows("RATE_LIMIT_"), "needs chatd's rate limits (RATE_LIMIT_* settings, issue Security II)")
class RateLimitTest(PageTestCase):
    """The real limiter with one chat a minute: the second message gets 429 and Retry-After."""

    server_env = dict(SLOW_DEMO, RATE_LIMIT_CHAT_PER_MINUTE="1", RATE_LIMIT_CHAT_BURST="1")

    def test_429_shows_the_banner_with_the_wait(self):
        page = self.page.open(user=self.user)
        page.wait_status(page.send("One"), "complete")
        page.type_and_send("Two")
        shown, kind, text = wait_until("the error banner", lambda: (lambda b: b if b[0] else None)(page.banner()))
        self.assertEqual(kind, "rate_limited", text)
        self.assertRegex(text, r"send again in \d+ seconds?")
        self.assertFalse(page.find("send").is_enabled(), "send stays enabled while the limit holds")
        # Closing the banner lets the user try again (the server says so again if it is too soon).
        # The banner is an alert: only its countdown changes each second, and that is not read out again.
        page.js("""window.bannerChanges = [];
                   new MutationObserver(function (records) {
                     records.forEach(function (r) {
                       var node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
                       var live = node.closest('[aria-live]');
                       window.bannerChanges.push(live ? live.getAttribute('aria-live') : 'alert');
                     });
                   }).observe(document.getElementById('error-banner'),
                              {childList: true, characterData: true, subtree: true});""")
        wait_until("the countdown to tick", lambda: page.js("return window.bannerChanges.length") >= 2)
        self.assertEqual(set(page.js("return window.bannerChanges")), {"off"},
                         "the countdown changes text that the alert reads out again")
        self.assertRegex(page.banner()[2], r"send again in \d+ seconds?")
        self.browser.driver.find_element("id", "error-dismiss").click()
        wait_until("send to be enabled once the banner is closed", lambda: page.find("send").is_enabled())


class BodyLimitTest(PageTestCase):
    """A small SERVER_MAX_BODY_BYTES: a message within CHAT_MAX_MESSAGE_CHARS can still be too
    large in UTF-8 (3 bytes a CJK character). The page says so instead of sending it for a 413."""

    server_env = dict(SLOW_DEMO, SERVER_MAX_BODY_BYTES="1024")

    def test_text_too_large_for_the_server_is_said_so_before_it_is_sent(self):
        page = self.page.open(user=self.user)
        composer = page.find("composer")
        composer.click()
        self.browser.driver.execute_cdp_cmd("Input.insertText", {"text": "漢" * 600})  # 1,800 bytes
        wait_until("the size note", lambda: page.visible("composer-limit"))
        self.assertIn("Too large for the server", page.find("composer-limit").text)
        self.assertFalse(page.find("send").is_enabled())
        composer.send_keys(Keys.ENTER)
        time.sleep(0.5)
        self.assertEqual(page.messages(), [], "a message too large for the server went out")
        self.assertFalse(page.banner()[0], "the server was asked anyway: %r" % (page.banner(),))
        # What fits goes out as usual.
        page.js("document.getElementById('composer').select()")
        # 250 CJK characters are 750 bytes: with the rest of the body, within 1,024.
        self.browser.driver.execute_cdp_cmd("Input.insertText", {"text": "漢" * 250})
        wait_until("the size note to go", lambda: not page.visible("composer-limit"))
        reply = page.send("")
        page.wait_status(reply, "complete")
        user_messages = [m for m in self.history.messages(page.session_id()) if m["role"] == "user"]
        self.assertEqual([m["content"] for m in user_messages], ["漢" * 250])


class StreamLimitTest(PageTestCase):
    """Two open streams per user: a third tab is refused with 429, which is not about sending."""

    server_env = dict(SLOW_DEMO, RATE_LIMIT_STREAMS_PER_USER="2")

    def test_a_stream_over_the_limit_says_too_many_conversations_are_open(self):
        first = self.page.open(user=self.user)
        first.wait_status(first.send("Open in three tabs"), "complete")
        session_id = first.session_id()
        self.browser.new_window(first.base_url).open(session_id)
        third = self.browser.new_window(first.base_url).open(session_id)
        shown, kind, text = wait_until("the error banner", lambda: (lambda b: b if b[0] else None)(third.banner()))
        self.assertEqual(kind, "stream", text)  # about the stream: a message sent meanwhile does not clear it
        self.assertIn("conversations are open", text)
        self.assertNotIn("sending too fast", text)
        # A message sent meanwhile goes out (after its wait for the stream), and the banner stays.
        third.wait_status(third.send("Sent from the third tab"), ("streaming", "complete"))
        self.assertEqual(third.banner()[:2], (True, "stream"), "the reason the reply does not stream was cleared")



class FastReplyPageTest(PageTestCase):
    """A reply of a word per chunk at full pace: the page keeps its resume record without
    rewriting it for every chunk (each write holds the whole text: per chunk, quadratic)."""

    server_env = {"WORKER_DEMO_CHUNK_DELAY": "5ms", "WORKER_DEMO_WORDS_PER_CHUNK": "1"}

    def test_the_resume_record_is_written_a_few_times_not_per_chunk(self):
        page = self.page.open(user=self.user)
        page.js("""
            window.resumeWrites = 0;
            window.resumeWritesMidReply = 0; // records that hold a running reply's text
            const setItem = Storage.prototype.setItem;
            Storage.prototype.setItem = function (key, value) {
              if (String(key).startsWith('chatd.stream.')) {
                window.resumeWrites += 1;
                if (Object.keys(JSON.parse(value).replies || {}).length) window.resumeWritesMidReply += 1;
              }
              return setItem.call(this, key, value);
            };""")
        reply_id = page.send("Talk fast, one word at a time")
        final = page.wait_status(reply_id, ("complete", "cancelled", "error"))
        self.assertEqual(final["status"], "complete")
        stored = self.history.wait_message(page.session_id(), reply_id)
        self.assert_same_as_stored(final, stored, "fast reply")
        chunks = len(stored["content"].split())  # a word per chunk
        writes = page.js("return window.resumeWrites")
        self.assertGreater(chunks, 40, "the demo reply is too short to tell")
        self.assertGreater(page.js("return window.resumeWritesMidReply"), 0,
                           "the reply's progress was never kept for a reload")
        self.assertLess(writes * 4, chunks, "%d writes of the resume record for %d chunks" % (writes, chunks))


    def test_the_message_sent_is_never_shown_twice(self):
        # The reply's first chunk can come before the 202 (a slow network on the way back: here the page gets each
        # 202 a second late) and makes the page fetch the history, which holds the message already: until the 202
        # the page showed it twice (as sent, and as stored).
        page = self.page.open(user=self.user)
        page.js("""
            const fetchNow = window.fetch;
            window.fetch = async (url, options) => {
              const response = await fetchNow(url, options);
              const chat = options && options.method === 'POST' && new URL(url, location.href).pathname === '/api/chat';
              if (chat) await new Promise((resolve) => setTimeout(resolve, 1000));
              if (chat) {
                window.chatsAnswered = (window.chatsAnswered || 0) + 1;
                // Whether the history had shown the message stored before this 202 came.
                (window.storedBefore202 = window.storedBefore202 || []).push(document.querySelectorAll(
                  '[data-testid="message"][data-role="user"][data-message-id]').length === window.chatsAnswered);
              }
              return response;
            };
            window.mostUserMessages = 0;
            const count = () => {
              const shown = document.querySelectorAll('[data-testid="message"][data-role="user"]').length;
              window.mostUserMessages = Math.max(window.mostUserMessages, shown);
            };
            new MutationObserver(count).observe(document.getElementById('message-list'), {childList: true});""")
        for n in range(1, 6):
            reply_id = page.send("Message number %d" % n)
            self.assertEqual(page.wait_status(reply_id, ("complete", "cancelled", "error"))["status"], "complete")
            wait_until("the message once, as stored", lambda: sum(
                1 for m in page.messages() if m["role"] == "user" and m["id"]) == n)
            wait_until("the 202", lambda: page.js("return window.chatsAnswered") == n)
            self.assertEqual(page.js("return window.mostUserMessages"), n, "message %d was shown twice" % n)
        self.assertTrue(any(page.js("return window.storedBefore202")),
                        "no message was in the history before its 202: the case was never tried")


class ProviderErrorPageTest(PageTestCase):
    """The default provider has no API key: every reply ends with error provider_not_configured."""
    server_env = dict(SLOW_DEMO, WORKER_DEFAULT_PROVIDER="openai")

    def test_a_reply_error_is_said_once_and_not_again_after_a_reload(self):
        page = self.page.open(user=self.user)
        reply_id = page.send("Ask a provider that has no key")
        self.assertEqual(page.wait_status(reply_id, ("complete", "cancelled", "error"))["status"], "error")
        shown, kind, text = wait_until("the error banner", lambda: (lambda b: b if b[0] else None)(page.banner()))
        self.assertEqual(kind, "provider", text)
        self.browser.driver.find_element("id", "error-dismiss").click()
        wait_until("the banner to close", lambda: not page.banner()[0])
        # The page resumes on the reply's final chunk, where the stream sends its `error` again: old news.
        connects = self.server.log(10**7).count("sse_connected")
        page.reload()
        self.assertEqual(page.wait_status(reply_id, ("complete", "cancelled", "error"))["status"], "error")
        wait_until("the reloaded page's stream", lambda: self.server.log(10**7).count("sse_connected") > connects)
        time.sleep(2)  # the replayed `error` comes right after the connect
        self.assertEqual(page.banner()[:2], (False, ""), "the reply's error was said again: %r" % (page.banner(),))


if __name__ == "__main__":
    unittest.main()
