"""Headless Chromium (Debian's chromium, chromium-driver, python3-selenium) driving the chat page.

The page's stable hooks are its data-testid attributes (web/src/index.html, conversation.js,
session-list.js); nothing here depends on layout. Every wait is a poll on a condition with a
generous limit: a loaded machine makes a test slower, not red.
"""

import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import harness  # noqa: E402  (the e2e harness: chatd processes, raw HTTP)

try:
    from selenium import webdriver
    from selenium.common.exceptions import JavascriptException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError as e:  # make test installs it; a bare ctest run may not have
    raise SystemExit("python3-selenium is missing (scripts/install-deps.sh --test installs it): %s" % e)

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
WAIT = float(os.environ.get("WEB_TEST_WAIT", "60"))  # seconds, for any one condition

# What works headless on these machines (also as root).
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-features=Translate,MediaRouter", "--password-store=basic"]

# One call returns every message as the page shows it.
MESSAGES_JS = """
return Array.from(document.querySelectorAll('[data-testid="message"]')).map(function (m) {
  var body = m.querySelector('[data-testid="message-body"]');
  var note = m.querySelector('.message-note');
  return {role: m.dataset.role, id: m.dataset.messageId || '', status: m.dataset.status || '',
          text: body ? body.textContent : '', html: body ? body.innerHTML : '',
          note: note && !note.hidden ? note.textContent : ''};
});
"""


def normalize(text):
    """Text as a reader compares it: runs of whitespace are one space."""
    return " ".join(text.split())


class Timeout(AssertionError):
    pass


def wait_until(what, condition, timeout=WAIT, interval=0.1):
    """Polls condition() until it returns something truthy; returns it. Fails naming `what`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (JavascriptException, WebDriverException) as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise Timeout("%s: not within %.0f s%s" % (what, timeout, " (last error: %s)" % last_error if last_error else ""))
        time.sleep(interval)


class Browser:
    """One headless Chromium with a fresh profile; each window is a ChatPage."""

    def __init__(self, width=1280, height=860):
        for path in (CHROMIUM, CHROMEDRIVER):
            if not os.path.exists(path):
                raise SystemExit("%s is missing (scripts/install-deps.sh --test installs chromium and chromium-driver)"
                                 % path)
        self.profile = tempfile.mkdtemp(prefix="chatd-web-profile-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument("--user-data-dir=" + self.profile)
        options.add_argument("--window-size=%d,%d" % (width, height))
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(CHROMEDRIVER, log_path=os.path.join(self.profile, "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(WAIT)
        self.driver.set_script_timeout(WAIT)
        self.console = []  # every console entry seen so far

    def page(self, base_url):
        return ChatPage(self, self.driver.current_window_handle, base_url)

    def new_window(self, base_url):
        self.driver.switch_to.new_window("window")
        return ChatPage(self, self.driver.current_window_handle, base_url)

    def read_console(self):
        try:
            self.console.extend(self.driver.get_log("browser"))
        except WebDriverException:
            pass

    def console_problems(self):
        """Console errors other than failed network requests (the page shows those itself):
        script errors, Content-Security-Policy and Trusted Types violations."""
        self.read_console()
        return [e for e in self.console if e.get("level") == "SEVERE" and e.get("source") != "network"]

    def expect_console(self, text):
        """Forgets the console entries that mention text (a violation a test provoked on purpose)."""
        self.read_console()
        self.console = [e for e in self.console if text not in e.get("message", "")]

    def quit(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


class ChatPage:
    """One window showing the chat page."""

    def __init__(self, browser, handle, base_url):
        self.browser = browser
        self.driver = browser.driver
        self.handle = handle
        self.base_url = base_url.rstrip("/")

    # -- plumbing -----------------------------------------------------------------
    def focus(self):
        if self.driver.current_window_handle != self.handle:
            self.driver.switch_to.window(self.handle)
        return self

    def js(self, script, *args):
        self.focus()
        return self.driver.execute_script(script, *args)

    def find(self, testid):
        self.focus()
        return self.driver.find_element(By.CSS_SELECTOR, '[data-testid="%s"]' % testid)

    def all(self, testid):
        self.focus()
        return self.driver.find_elements(By.CSS_SELECTOR, '[data-testid="%s"]' % testid)

    def visible(self, testid):
        elements = self.all(testid)
        return bool(elements) and elements[0].is_displayed()

    def screenshot(self, path):
        self.focus()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.driver.save_screenshot(path)

    # -- navigation ---------------------------------------------------------------
    def open(self, session_id=None, user=None):
        """Loads the page (a conversation with ?c=), and signs in as `user` if it asks."""
        self.focus()
        url = self.base_url + "/" + ("?c=" + session_id if session_id else "")
        self.driver.get(url)
        self.wait_ready(user)
        return self

    def reload(self, user=None):
        self.focus()
        self.driver.refresh()
        self.wait_ready(user)

    def wait_ready(self, user=None):
        """Until the page has asked for a name or shows who is signed in; answers with `user`."""
        def state():
            return self.js("""
                var d = document.getElementById('sign-in');
                if (d && d.open) return 'sign-in';
                var who = document.getElementById('who');
                return who && who.textContent ? 'ready' : '';""")
        if wait_until("the page to load", state) == "sign-in":
            if user is None:
                raise AssertionError("the page asks for a user name and the test gave none")
            self.sign_in(user)
        wait_until("the page to show the signed-in user", lambda: state() == "ready")

    def sign_in(self, user):
        field = self.find("sign-in-name")
        field.clear()
        field.send_keys(user)
        self.find("sign-in-submit").click()
        wait_until("the sign-in dialog to close", lambda: not self.js("return document.getElementById('sign-in').open"))

    def session_id(self):
        match = re.search(r"[?&]c=([A-Za-z0-9_-]+)", self.focus().driver.current_url)
        return match.group(1) if match else None

    # -- the conversation ---------------------------------------------------------
    def type_and_send(self, text, key=Keys.ENTER):
        composer = self.find("composer")
        composer.click()
        composer.send_keys(text)
        composer.send_keys(key)

    def send(self, text):
        """Sends with Enter; returns the assistant message's id once the page shows it."""
        before = {m["id"] for m in self.messages() if m["role"] == "assistant"}
        self.type_and_send(text)
        reply = wait_until("a new assistant message after sending %r" % text[:40],
                           lambda: next((m for m in self.messages() if m["role"] == "assistant"
                                         and m["id"] and m["id"] not in before), None))
        return reply["id"]

    def messages(self):
        return self.js(MESSAGES_JS)

    def message(self, message_id):
        return next((m for m in self.messages() if m["id"] == message_id), None)

    def wait_status(self, message_id, statuses, timeout=WAIT):
        statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
        return wait_until("message %s to be %s" % (message_id, "/".join(statuses)),
                          lambda: (lambda m: m if m and m["status"] in statuses else None)(self.message(message_id)),
                          timeout)

    def watch_growth(self, message_id, timeout=WAIT):
        """Observes a reply until it ends; returns (the distinct texts seen while it streamed, the last message)."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.message(message_id)
            if m and m["status"] == "streaming" and m["text"] and (not seen or seen[-1] != m["text"]):
                seen.append(m["text"])
            if m and m["status"] in ("complete", "cancelled", "error"):
                return seen, m
            if time.monotonic() >= deadline:
                raise Timeout("reply %s did not end within %.0f s (last: %r)" % (message_id, timeout, m))
            time.sleep(0.05)

    def banner(self):
        """(shown, kind, text) of the error banner."""
        return tuple(self.js("""
            var b = document.querySelector('[data-testid="error-banner"]');
            return [!!b && !b.hidden, (b && b.dataset.kind) || '', b ? b.textContent.trim() : ''];"""))

    def session_items(self):
        return self.js("""
            return Array.from(document.querySelectorAll('[data-testid="session-item"]')).map(function (li) {
              return {id: li.dataset.sessionId, title: li.querySelector('.session-title').textContent};
            });""")


class StoredHistory:
    """The history API, read the way any client would (raw HTTP on the server's port)."""

    def __init__(self, port, user):
        self.port = port
        self.user = user

    def messages(self, session_id):
        r = harness.http_request(self.port, "GET", "/api/sessions/%s/messages?user_id=%s&limit=200" % (session_id, self.user))
        if r.status != 200:
            raise AssertionError("history of %s -> %s %r" % (session_id, r.status, r.body[:300]))
        return r.json()["messages"]

    def message(self, session_id, message_id):
        return next((m for m in self.messages(session_id) if m["message_id"] == message_id), None)

    def wait_message(self, session_id, message_id, timeout=WAIT):
        """The stored message once it is stored."""
        return wait_until("message %s to be stored" % message_id,
                          lambda: self.message(session_id, message_id), timeout, interval=0.2)

    def sessions(self, limit=50):
        r = harness.http_request(self.port, "GET", "/api/sessions?user_id=%s&limit=%d" % (self.user, limit))
        if r.status != 200:
            raise AssertionError("sessions -> %s %r" % (r.status, r.body[:300]))
        return r.json()["sessions"]
