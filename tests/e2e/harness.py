"""End-to-end harness for chatd: starts the real binary, talks HTTP and SSE to it.

Standard library only.  Every wait has a timeout; nothing here blocks forever.

Environment:
  CHATD_BIN         path of the chatd binary (default /work/main/build/chatd)
  E2E_KEEP_LOGS=1   keep server temp dirs (logs, DB) instead of removing them
"""

import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import uuid

import openapi_check

DEFAULT_BIN = "/work/main/build/chatd"
HOST = "127.0.0.1"
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

# Settings that would switch chatd away from its embedded default or change the
# behaviour the tests expect; never inherit them from the caller's environment.
# Under AddressSanitizer (make test-asan sets ASAN_OPTIONS) freed memory sits in a 256 MB
# quarantine and every allocation has redzones, so RSS says nothing about what the pod holds:
# memory bounds are checked in the normal build only (LeakSanitizer checks leaks there), and so are
# checks whose timing the sanitizer's slowdown changes.
UNDER_ASAN = bool(os.environ.get("ASAN_OPTIONS"))

# The functional suites drive one user from one address far harder than a person
# would: the admission limits are off unless a test sets them (test_limits.py).
NO_LIMITS = {"RATE_LIMIT_CHAT_PER_MINUTE": "0", "RATE_LIMIT_RUNNING_REPLIES": "0", "RATE_LIMIT_IP_PER_MINUTE": "0",
             "RATE_LIMIT_STREAMS_PER_USER": "0", "SERVER_MAX_CONNECTIONS_PER_IP": "0"}

_SCRUB_PREFIXES = ("SERVER_", "SSE_", "CHAT_", "BUFFER_", "DB_", "REDIS_", "NATS_", "WORKER_",
                   "AUTH_", "RATE_LIMIT_", "OPENAI_", "ANTHROPIC_", "LOG_", "POD_ID")


def chatd_bin():
    return os.environ.get("CHATD_BIN") or DEFAULT_BIN


def new_id(prefix):
    return "%s_%s" % (prefix, uuid.uuid4().hex[:16])


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports Chromium will not connect to (its restricted list, net/base/port_util.cc) at or above
# 10,000: a chat page test whose chatd got one never loaded the page.
BROWSER_REFUSED_PORTS = {10080}


def free_port():
    """A port free now, below the kernel's ephemeral range. A port the kernel hands out for
    bind(0) is also the kind it gives outgoing connections: a test's client could take it
    between this check and the server's bind. Below the range only listeners use ports."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, max(low, 10001))
        if port in BROWSER_REFUSED_PORTS:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


class StartError(Exception):
    pass


# --------------------------------------------------------------------------
# HTTP over a raw socket
# --------------------------------------------------------------------------

class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name-lowercase, value)
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in reversed(self.headers):
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as e:  # noqa: BLE001
            raise AssertionError("response body is not JSON (%s): %r" % (e, self.body[:500]))

    def __repr__(self):
        return "<Response %s %s headers=%r body=%r>" % (self.status, self.reason, self.headers, self.body[:300])


class _Reader:
    """Buffered reads from a socket with an absolute deadline per call."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def fill(self, deadline):
        """Reads more bytes; returns False on EOF. Raises socket.timeout at deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self.eof = True
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[:i + len(marker)])
                del self.buf[:i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (marker, limit))
            if not self.fill(deadline):
                raise EOFError("connection closed while waiting for %r (have %r)" % (marker, bytes(self.buf[:200])))

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self.fill(deadline):
                raise EOFError("connection closed after %d of %d bytes" % (len(self.buf), n))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self, deadline):
        while self.fill(deadline):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _parse_head(reader, deadline):
    head = reader.read_until(b"\r\n\r\n", deadline, limit=256 * 1024).decode("latin-1")
    lines = head.split("\r\n")
    m = re.match(r"^HTTP/(\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if ":" not in line:
            raise AssertionError("bad header line %r" % line)
        k, v = line.split(":", 1)
        headers.append((k.strip().lower(), v.strip()))
    return m.group(1), int(m.group(2)), m.group(3) or "", headers


def _hget(headers, name):
    for k, v in reversed(headers):
        if k == name:
            return v
    return None


def read_response(reader, deadline, method="GET"):
    version, status, reason, headers = _parse_head(reader, deadline)
    te = (_hget(headers, "transfer-encoding") or "").lower()
    cl = _hget(headers, "content-length")
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in te:
        body = bytearray()
        while True:
            line = reader.read_until(b"\r\n", deadline).decode("latin-1").strip()
            size = int(line.split(";", 1)[0], 16)
            if size == 0:
                while reader.read_until(b"\r\n", deadline) != b"\r\n":
                    pass
                break
            body += reader.read_exact(size, deadline)
            if reader.read_exact(2, deadline) != b"\r\n":
                raise AssertionError("bad chunk terminator")
        body = bytes(body)
    elif cl is not None:
        body = reader.read_exact(int(cl), deadline)
    else:
        body = reader.read_to_eof(deadline)
    resp = Response(status, reason, headers, body)
    resp.http_version = version
    return resp


class HttpConn:
    """One HTTP/1.1 connection on a raw socket (keep-alive friendly)."""

    def __init__(self, port, host=HOST, timeout=10.0, openapi=True):
        self.host, self.port, self.timeout = host, port, timeout
        self.openapi = openapi  # check every response against docs/openapi.yaml (False: not a chatd)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = _Reader(self.sock)

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, method, path, body=None, headers=None, timeout=None):
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (self.host, self.port)]
        lower = {k.lower() for k in headers}
        if body is not None and "content-length" not in lower and "transfer-encoding" not in lower:
            headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            lines.append("%s: %s" % (k, v))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (413) and close before reading everything
        return self.read_response(method, timeout, target=path)

    def read_response(self, method="GET", timeout=None, target=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        resp = read_response(self.reader, deadline, method)
        if self.openapi:
            openapi_check.check_response(method, target, resp)
        return resp

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def http_request(port, method, path, body=None, headers=None, timeout=10.0, openapi=True):
    conn = HttpConn(port, timeout=timeout, openapi=openapi)
    try:
        h = {"Connection": "close"}
        h.update(headers or {})
        return conn.request(method, path, body, h, timeout)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# SSE client on a raw socket
# --------------------------------------------------------------------------

class SSEEvent:
    def __init__(self, event, data, id, raw_fields):
        self.event = event
        self.data = data
        self.id = id
        self.raw_fields = raw_fields
        self.received_at = time.monotonic()

    def json(self):
        try:
            return json.loads(self.data)
        except Exception as e:  # noqa: BLE001
            raise AssertionError("event %r: data is not JSON (%s): %r" % (self.event, e, self.data))

    def __repr__(self):
        d = self.data if len(self.data) < 300 else self.data[:300] + "..."
        return "<SSE %s id=%r %s>" % (self.event, self.id, d)


class SSEClosed(Exception):
    pass


class SSETimeout(AssertionError):
    pass


class SSEClient:
    """GET an SSE endpoint on a raw socket and parse the event stream incrementally.

    Supports close-delimited, Content-Length and chunked bodies.
    """

    def __init__(self, port, path, headers=None, host=HOST, rcvbuf=None, connect_timeout=5.0, openapi=True):
        self.port, self.path = port, path
        self.openapi = openapi  # check the head and every event against docs/openapi.yaml
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(connect_timeout)
        self.sock.connect((host, port))
        self.reader = _Reader(self.sock)
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port), "Accept: text/event-stream",
                 "Cache-Control: no-cache"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.status = None
        self.headers = None
        self.body = b""         # non-stream (error) body
        self.events = []        # every event parsed so far (in order)
        self.retries = []       # (index in events at which the retry line came, value)
        self.comments = []
        self.closed = False     # body ended (EOF / last chunk)
        self.reset = False      # connection reset by peer
        self.raw_bytes = 0
        self._queue = collections.deque()  # parsed, not yet returned by next_event
        self._body = bytearray()  # decoded body bytes, not yet split into lines
        self._chunked = False
        self._length = None
        self._cstate = "size"
        self._cremain = 0
        self._block = []        # fields of the block being read
        self._craw = bytearray()  # undecoded chunked-encoding bytes

    # -- response head ------------------------------------------------------
    def open(self, timeout=5.0):
        """Reads the status line and headers. For a non-200 answer reads the body too."""
        deadline = time.monotonic() + timeout
        _, self.status, self.reason, self.headers = _parse_head(self.reader, deadline)
        te = (_hget(self.headers, "transfer-encoding") or "").lower()
        self._chunked = "chunked" in te
        cl = _hget(self.headers, "content-length")
        self._length = int(cl) if cl is not None and not self._chunked else None
        if self._length == 0:
            self._finish_body()
        if self.status != 200:
            body = bytearray()
            try:
                while not self.closed and time.monotonic() < deadline:
                    self._pump(deadline, body_sink=body)
            except (socket.timeout, SSETimeout):
                pass
            self.body = bytes(body)
        if self.openapi:
            openapi_check.check_response("GET", self.path, Response(self.status, self.reason, self.headers, self.body),
                                         body_expected=self.status != 200)
        return self

    def header(self, name):
        return _hget(self.headers or [], name.lower())

    def json_body(self):
        return json.loads(self.body.decode("utf-8"))

    # -- body decoding ------------------------------------------------------
    def _pump(self, deadline, body_sink=None):
        """Reads once from the socket and decodes what is available."""
        if self.reader.buf:
            got = True
        else:
            got = self.reader.fill(deadline)
        if not got:
            self.reset = self.reader.reset
            self._finish_body()
            return
        data = bytes(self.reader.buf)
        self.reader.buf.clear()
        self.raw_bytes += len(data)
        self._decode(data, body_sink)

    def _finish_body(self):
        if not self.closed:
            self.closed = True
            self._feed(b"", eof=True)

    def _decode(self, data, body_sink):
        out = body_sink if body_sink is not None else None
        if not self._chunked:
            if self._length is not None:
                take = data[:self._length]
                self._length -= len(take)
                data = take
            self._emit_body(data, out)
            if self._length == 0:
                self._finish_body()
            return
        self._craw += data
        while True:
            if self._cstate == "size":
                i = self._craw.find(b"\r\n")
                if i < 0:
                    return
                line = bytes(self._craw[:i]).decode("latin-1").split(";", 1)[0].strip()
                del self._craw[:i + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise AssertionError("bad chunk size line %r" % line)
                if size == 0:
                    self._cstate = "done"
                    self._finish_body()
                    return
                self._cremain = size
                self._cstate = "data"
            elif self._cstate == "data":
                if not self._craw:
                    return
                take = bytes(self._craw[:self._cremain])
                del self._craw[:len(take)]
                self._cremain -= len(take)
                self._emit_body(take, out)
                if self._cremain == 0:
                    self._cstate = "crlf"
            elif self._cstate == "crlf":
                if len(self._craw) < 2:
                    return
                if bytes(self._craw[:2]) != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF: %r" % bytes(self._craw[:20]))
                del self._craw[:2]
                self._cstate = "size"
            else:
                return

    def _emit_body(self, data, body_sink):
        if body_sink is not None:
            body_sink += data
        else:
            self._feed(data)

    # -- event stream parsing -----------------------------------------------
    def _feed(self, data, eof=False):
        self._body += data
        while True:
            n = len(self._body)
            i_n = self._body.find(b"\n")
            i_r = self._body.find(b"\r")
            if i_n < 0 and i_r < 0:
                break
            if i_r >= 0 and (i_n < 0 or i_r < i_n):
                if i_r == n - 1 and not eof:
                    break  # might be the start of CRLF
                line = bytes(self._body[:i_r])
                cut = i_r + (2 if i_r + 1 < n and self._body[i_r + 1] == 0x0A else 1)
            else:
                line = bytes(self._body[:i_n])
                cut = i_n + 1
            del self._body[:cut]
            self._line(line.decode("utf-8", errors="replace"))
        # an unterminated last block is discarded at EOF (as EventSource does)

    def _line(self, line):
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "retry":
            self.retries.append((len(self.events), value))
        self._block.append((field, value))

    def _dispatch(self):
        block, self._block = self._block, []
        if not block:
            return
        event, data, eid, has_payload = "message", [], None, False
        for field, value in block:
            if field == "event":
                event, has_payload = value, True
            elif field == "data":
                data.append(value)
                has_payload = True
            elif field == "id":
                eid, has_payload = value, True
        if not has_payload:
            return  # e.g. a block holding only retry:
        ev = SSEEvent(event, "\n".join(data), eid, block)
        if self.openapi:
            openapi_check.check_event(ev.event, ev.data, "GET %s" % self.path.split("?", 1)[0])
        self.events.append(ev)
        self._queue.append(ev)

    # -- public API ---------------------------------------------------------
    def next_event(self, timeout=5.0):
        """Next event; raises SSETimeout after timeout, SSEClosed at end of stream."""
        deadline = time.monotonic() + timeout
        while not self._queue:
            if self.closed:
                raise SSEClosed("stream ended (reset=%s) after %d events" % (self.reset, len(self.events)))
            try:
                self._pump(deadline)
            except socket.timeout:
                raise SSETimeout("no SSE event within %.1fs (have %d events; last: %r)"
                                 % (timeout, len(self.events), self.events[-3:]))
        return self._queue.popleft()

    def collect_until(self, predicate, timeout=15.0):
        """Events up to and including the first that satisfies predicate."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SSETimeout("condition not met within %.1fs; got %d events, last %r"
                                 % (timeout, len(got), got[-5:]))
            try:
                ev = self.next_event(remaining)
            except SSEClosed as e:
                raise AssertionError("stream ended before condition was met: %s; last %r" % (e, got[-5:]))
            except SSETimeout:
                continue
            got.append(ev)
            if predicate(ev):
                return got

    def collect_for(self, duration):
        """All events for `duration` seconds (less if the stream ends)."""
        deadline = time.monotonic() + duration
        got = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                got.append(self.next_event(remaining))
            except SSETimeout:
                return got
            except SSEClosed:
                return got

    def wait_closed(self, timeout):
        """Reads (and keeps) events until the stream ends. Returns True if it ended in time."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            try:
                self._pump(deadline)
            except socket.timeout:
                return False
        return True

    def drain(self, timeout, chunk=1 << 20):
        """Reads as fast as possible until EOF/RST; returns True if it ended within timeout."""
        return self.wait_closed(timeout)

    def connected(self, timeout=5.0):
        """open() + expect 200 + first event `connected`; returns its data."""
        if self.status is None:
            self.open(timeout)
        if self.status != 200:
            raise AssertionError("SSE %s -> %s %r" % (self.path, self.status, self.body[:300]))
        ev = self.next_event(timeout)
        if ev.event != "connected":
            raise AssertionError("first SSE event is %r, expected 'connected'" % (ev,))
        return ev.json()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------

def dump_stacks(pid, name):
    """Writes every thread's stack of a process that did not stop to stderr (needs gdb), so a
    shutdown that hangs in CI says where it hangs."""
    gdb = shutil.which("gdb")
    if not gdb:
        sys.stderr.write("\n(%s did not stop; no gdb for its stacks)\n" % name)
        return
    try:
        out = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off",
                              "-ex", "thread apply all bt"], capture_output=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        out = ("gdb failed: %r" % e).encode()
    sys.stderr.write("\n----- stacks of %s (pid %d), which did not stop -----\n%s\n"
                     % (name, pid, out.decode("utf-8", errors="replace")))


class ChatdServer:
    def __init__(self, name="chatd", env=None, db_path=None, args=None):
        self.name = name
        self.extra_env = dict(env or {})
        self.args = list(args or [])
        self.tmpdir = tempfile.mkdtemp(prefix="chatd-e2e-%s-" % name)
        self.own_db = db_path is None
        self.db_path = db_path or os.path.join(self.tmpdir, "chat.db")
        self.log_path = os.path.join(self.tmpdir, "server.log")
        self.proc = None
        self.port = None
        self.pod_id = "e2e-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)[:40]
        self.exit_code = None
        self.stop_seconds = None
        self.killed = False
        self._log = None

    # -- lifecycle ----------------------------------------------------------
    def build_env(self, port):
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        env.update({
            "SERVER_HOST": HOST,
            "SERVER_PORT": str(port),
            "DB_PATH": self.db_path,
            "POD_ID": self.pod_id,
            "LOG_LEVEL": "info",
        })
        env.update(NO_LIMITS)
        env.update(self.extra_env)
        return env

    def spawn(self, port=None):
        """Starts the process without waiting for health."""
        binary = chatd_bin()
        if not os.path.exists(binary):
            raise StartError("chatd binary not found at %s (set CHATD_BIN)" % binary)
        self.port = port or free_port()
        self._log = open(self.log_path, "ab")
        self._log.write(("=== start %s port %d env %r\n" % (binary, self.port, self.extra_env)).encode())
        self._log.flush()
        self.proc = subprocess.Popen([binary] + self.args, env=self.build_env(self.port), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmpdir)
        self.exit_code = None
        return self

    def start(self, timeout=20.0):
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_healthy(timeout)
                return self
            except StartError:
                if self.proc.poll() is not None and attempt < 2 and "ddress already in use" in self.log():
                    continue  # lost a port race; try another port
                self.kill()
                raise
        raise StartError("could not start %s" % self.name)

    def wait_healthy(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError("chatd exited with %s during start-up; log:\n%s" % (self.proc.returncode, self.log()))
            try:
                r = http_request(self.port, "GET", "/health", timeout=2.0)
                # Another test's chatd may hold the port this one could not bind (it then exits
                # "address in use"): only an answer with this process's own pod id counts.
                pod = r.json().get("pod_id") if r.status == 200 else None
                if pod == self.extra_env.get("POD_ID", self.pod_id):
                    return
                last = r if pod is None else "answered by another chatd (pod %r)" % pod
            except (OSError, EOFError, AssertionError) as e:
                last = e
            time.sleep(0.05)
        raise StartError("chatd not healthy within %.0fs (last: %r); log:\n%s" % (timeout, last, self.log()))

    def stop(self, timeout=15.0, sig=signal.SIGTERM):
        """SIGTERM, then SIGKILL after timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                dump_stacks(self.proc.pid, self.name)
                self.proc.kill()
                self.proc.wait(10)
            self.stop_seconds = time.monotonic() - t0
        self.exit_code = self.proc.returncode
        if self._log:
            self._log.close()
            self._log = None
        return self.exit_code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._log:
            self._log.close()
            self._log = None

    def cleanup(self):
        self.kill()
        if os.environ.get("E2E_KEEP_LOGS") != "1":
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log(self, tail=20000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return "(no log)"
        return data[-tail:].decode("utf-8", errors="replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- HTTP helpers -------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=10.0):
        return http_request(self.port, method, path, body, headers, timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post_json(self, path, obj, headers=None, timeout=10.0):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        return self.request("POST", path, body, h, timeout)

    def chat(self, session_id, user_id, message, **extra):
        body = {"session_id": session_id, "user_id": user_id, "message": message}
        body.update(extra)
        return self.post_json("/api/chat", body)

    def chat_ok(self, session_id, user_id, message, **extra):
        r = self.chat(session_id, user_id, message, **extra)
        if r.status != 202:
            raise AssertionError("POST /api/chat -> %s %r (expected 202)" % (r.status, r.body[:500]))
        return r.json()

    def health(self):
        r = self.get("/health")
        if r.status != 200:
            raise AssertionError("/health -> %s %r" % (r.status, r.body[:300]))
        return r.json()

    def sse(self, session_id, user_id, headers=None, rcvbuf=None, extra_query=None):
        q = {"session_id": session_id, "user_id": user_id}
        q.update(extra_query or {})
        return SSEClient(self.port, "/api/sse?" + urllib.parse.urlencode(q), headers=headers, rcvbuf=rcvbuf)

    def sse_path(self, path, headers=None):
        return SSEClient(self.port, path, headers=headers)

    # -- database -----------------------------------------------------------
    def db(self):
        con = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(self.db_path), uri=True, timeout=5.0)
        con.row_factory = sqlite3.Row
        return con

    def db_query(self, sql, params=(), attempts=20):
        last = None
        for _ in range(attempts):
            try:
                con = self.db()
                try:
                    return [dict(r) for r in con.execute(sql, params).fetchall()]
                finally:
                    con.close()
            except sqlite3.OperationalError as e:
                last = e
                time.sleep(0.1)
        raise AssertionError("sqlite query failed: %s (%s)" % (last, sql))

    def wait_message_row(self, message_id, status, timeout=30.0):
        """Waits until the messages row with this id exists and asserts its status; returns the rows.

        A stored message never changes (the first write wins), so a row with another status fails at
        once. message_id is the primary key: there is at most one row, so a count proves nothing; check
        what the row holds. The limit is generous (a slow machine only makes this take longer).
        """
        deadline = time.monotonic() + timeout
        while True:
            rows = self.db_query("SELECT * FROM messages WHERE message_id = ?", (message_id,))
            if rows:
                if rows[0].get("status") != status:
                    raise AssertionError("message %s stored with status %r, expected %r: %r"
                                         % (message_id, rows[0].get("status"), status, rows[0]))
                return rows
            if time.monotonic() >= deadline:
                raise AssertionError("message %s not stored within %.0fs" % (message_id, timeout))
            time.sleep(0.1)


# --------------------------------------------------------------------------
# Reply helpers
# --------------------------------------------------------------------------

def reply_events(events, message_id):
    """chunk events and the message_complete event of one message, in order."""
    out = []
    for ev in events:
        if ev.event in ("chunk", "message_complete", "error"):
            d = ev.json()
            if d.get("message_id") == message_id:
                out.append(ev)
    return out


def is_complete_for(message_id):
    def pred(ev):
        if ev.event == "message_complete":
            return ev.json().get("message_id") == message_id
        if ev.event == "error":
            return ev.json().get("message_id") == message_id
        return False
    return pred


def is_complete_all(message_ids):
    pending = set(message_ids)

    def pred(ev):
        if ev.event in ("message_complete", "error"):
            pending.discard(ev.json().get("message_id"))
        return not pending
    return pred


class ReplyCheck:
    """Checks one message's chunk sequence against the contract; returns the text.

    A stream that fell behind may get consecutive chunks merged into one event (docs/API.md §4.6),
    which covers first_chunk_id to chunk_id: the events must cover 0..n-1 once each, in order.
    self.coalesced counts the chunks that arrived merged."""

    def __init__(self, tc, events, message_id, session_id):
        self.tc = tc
        evs = reply_events(events, message_id)
        chunks = [e for e in evs if e.event == "chunk"]
        completes = [e for e in evs if e.event == "message_complete"]
        errors = [e for e in evs if e.event == "error"]
        tc.assertFalse(errors, "unexpected error event(s) for %s: %r" % (message_id, errors))
        tc.assertTrue(chunks, "no chunk events for message %s" % message_id)
        tc.assertEqual(len(completes), 1, "expected exactly one message_complete for %s, got %r" % (message_id, completes))
        tc.assertIs(evs[-1], completes[0], "message_complete is not after the last chunk: %r" % evs[-3:])
        ids = []
        for i, ev in enumerate(chunks):
            d = ev.json()
            for f in ("session_id", "message_id", "chunk_id", "chunk", "chunk_type", "is_final"):
                tc.assertIn(f, d, "chunk event lacks %r: %r" % (f, ev))
            tc.assertEqual(d["session_id"], session_id, "chunk session_id: %r" % ev)
            tc.assertIsInstance(d["chunk_id"], int, "chunk_id not an int: %r" % ev)
            tc.assertIsInstance(d["chunk"], str, "chunk text not a string: %r" % ev)
            tc.assertIsInstance(d["is_final"], bool, "is_final not a bool: %r" % ev)
            tc.assertEqual(ev.id, "%s:%s" % (message_id, d["chunk_id"]), "SSE id of chunk: %r" % ev)
            first = d.get("first_chunk_id", d["chunk_id"])
            tc.assertLessEqual(first, d["chunk_id"], "first_chunk_id after chunk_id: %r" % ev)
            ids.extend(range(first, d["chunk_id"] + 1))
        tc.assertEqual(ids, list(range(len(ids))),
                       "chunk_ids of %s do not cover 0..n-1 once each, in order (gaps/duplicates/reordering): %r"
                       % (message_id, ids))
        self.coalesced = len(ids) - len(chunks)
        finals = [i for i, ev in enumerate(chunks) if ev.json()["is_final"]]
        tc.assertEqual(finals, [len(chunks) - 1], "is_final must be true exactly on the last chunk; final at %r of %d"
                       % (finals, len(chunks)))
        last = chunks[-1].json()
        md = last.get("metadata")
        tc.assertIsInstance(md, dict, "final chunk has no metadata object: %r" % chunks[-1])
        tc.assertIsInstance(md.get("model"), str, "metadata.model: %r" % md)
        tc.assertTrue(md.get("model"), "metadata.model empty: %r" % md)
        tok = md.get("tokens_used")
        tc.assertTrue(isinstance(tok, int) and not isinstance(tok, bool) and tok > 0,
                      "metadata.tokens_used must be an int > 0: %r" % md)
        tc.assertEqual(md.get("finish_reason"), "stop", "metadata.finish_reason: %r" % md)
        cd = completes[0].json()
        tc.assertEqual(cd.get("message_id"), message_id)
        tc.assertTrue(isinstance(cd.get("token_count"), int) and not isinstance(cd.get("token_count"), bool),
                      "message_complete.token_count must be an int: %r" % cd)
        tc.assertEqual(cd.get("finish_reason"), "stop", "message_complete.finish_reason: %r" % cd)
        self.chunks = chunks
        self.chunk_data = [c.json() for c in chunks]
        self.complete = cd
        self.metadata = md
        self.text = "".join(d["chunk"] for d in self.chunk_data)


def reply_signature(events, message_id):
    """Comparable (event, id, data-object) sequence of one message."""
    return [(e.event, e.id, e.json()) for e in reply_events(events, message_id)]


# --------------------------------------------------------------------------
# Test base class: prints server logs when a test fails
# --------------------------------------------------------------------------

class ChatdTestCase(unittest.TestCase):
    servers = []          # class-level servers (set in setUpClass)
    maxDiff = 4000

    @classmethod
    def start_server(cls, name, env=None, **kw):
        srv = ChatdServer(name=name, env=env, **kw)
        try:
            srv.start()
        except Exception:
            sys.stderr.write("\n----- log of %s -----\n%s\n" % (name, srv.log()))
            srv.cleanup()
            raise
        cls.servers = list(cls.servers) + [srv]
        return srv

    @classmethod
    def stop_servers(cls):
        """Stops class servers; raises if one did not exit 0 on SIGTERM in time."""
        problems = []
        for srv in cls.servers:
            alive_before = srv.alive()
            code = srv.stop(timeout=15.0)
            if srv.killed:
                problems.append("%s: did not exit within 15 s of SIGTERM (SIGKILLed)" % srv.name)
            elif alive_before and code != 0:
                problems.append("%s: exit code %s after SIGTERM" % (srv.name, code))
            elif not alive_before:
                problems.append("%s: had died before teardown (exit code %s)" % (srv.name, code))
            if problems and problems[-1].startswith(srv.name):
                sys.stderr.write("\n----- log of %s -----\n%s\n" % (srv.name, srv.log()))
            srv.cleanup()
        cls.servers = []
        if problems:
            raise AssertionError("; ".join(problems))

    @classmethod
    def tearDownClass(cls):
        cls.stop_servers()

    def setUp(self):
        self.local_servers = []
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        for srv in self.local_servers:
            srv.kill()  # temp dirs are removed in run(), after a failed test has printed the log

    def track(self, client):
        self.clients.append(client)
        return client

    def new_server(self, name, env=None, start=True, **kw):
        srv = ChatdServer(name=name, env=env, **kw)
        self.local_servers.append(srv)
        if start:
            srv.start()
        return srv

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        try:
            super().run(result)
            if len(result.failures) + len(result.errors) > before:
                for srv in list(type(self).servers) + list(getattr(self, "local_servers", [])):
                    sys.stderr.write("\n----- log of %s (test %s failed) -----\n%s\n----- end -----\n"
                                     % (srv.name, self.id(), srv.log(8000)))
        finally:
            for srv in getattr(self, "local_servers", []):
                srv.cleanup()
        return result

    # -- shared assertions ---------------------------------------------------
    def assertError(self, resp, status, code=None, msg=""):
        ctx = "%s: got %s %r" % (msg, resp.status, resp.body[:300])
        self.assertEqual(resp.status, status, ctx)
        ct = resp.header("content-type") or ""
        self.assertIn("application/json", ct.lower(), "error Content-Type %r; %s" % (ct, ctx))
        d = resp.json()
        self.assertIsInstance(d, dict, ctx)
        self.assertIsInstance(d.get("error"), dict, "error body must be {\"error\":{...}}; %s" % ctx)
        self.assertIsInstance(d["error"].get("code"), str, ctx)
        self.assertIsInstance(d["error"].get("message"), str, ctx)
        self.assertTrue(d["error"]["message"], "empty error message; %s" % ctx)
        if code is not None:
            codes = code if isinstance(code, (tuple, list)) else (code,)
            self.assertIn(d["error"]["code"], codes, ctx)
        return d

    def open_sse(self, srv, session_id, user_id, **kw):
        c = self.track(srv.sse(session_id, user_id, **kw))
        data = c.connected()
        return c, data

    def run_reply(self, srv, session_id, user_id, message, timeout=30.0, **extra):
        """SSE open, POST, collect until complete; returns (ReplyCheck, accept-json, client)."""
        c, _ = self.open_sse(srv, session_id, user_id)
        acc = srv.chat_ok(session_id, user_id, message, **extra)
        evs = c.collect_until(is_complete_for(acc["message_id"]), timeout)
        return ReplyCheck(self, evs, acc["message_id"], session_id), acc, c
