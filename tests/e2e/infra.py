"""Infrastructure for distributed end-to-end tests (standard library only).

  NatsServer    nats-server -js child on a free port (start / stop / restart on the same port,
                optional HTTP monitoring port for /connz)
  RedisServer   redis-server child on a free port (stop / start again on the same port)
  NatsClient    minimal NATS text-protocol client: CONNECT, PUB, SUB (queue groups), UNSUB, MSG,
                PING/PONG, flush, request
  RedisClient   minimal RESP client (any command; a few helpers)
  PodServer     a chatd pod (harness.ChatdServer with a fixed POD_ID, restartable on its port)
  WorkerProcess a chat-worker child
  Cluster       NATS + Redis + N pods + M workers, kill -9 / restart of pods and workers
  ClusterTestCase  unittest base class that prints every log of the cluster when a test fails

Every wait is bounded. Every child process is registered and killed at interpreter exit; on Linux
children started from the main thread also get SIGKILL when the test process dies (PR_SET_PDEATHSIG).

Environment:
  CHATD_BIN          chatd binary (default /work/main/build/chatd)
  CHAT_WORKER_BIN    chat-worker binary (default: chat-worker next to CHATD_BIN)
  CHAT_NATS_SERVER   nats-server binary (default: PATH, /usr/sbin)
  CHAT_REDIS_SERVER  redis-server binary (default: PATH, /usr/sbin)
  E2E_KEEP_LOGS=1    keep temp dirs
"""

import atexit
import ctypes
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import harness
from harness import HOST, ChatdServer, StartError, free_port, http_request

# --------------------------------------------------------------------------
# binaries and child-process bookkeeping
# --------------------------------------------------------------------------

_SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin")


def find_binary(name, env_var=None):
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    p = shutil.which(name)
    if p:
        return p
    for d in _SEARCH_DIRS:
        c = os.path.join(d, name)
        if os.access(c, os.X_OK):
            return c
    raise StartError("%s not found (PATH, %s)%s" % (name, ", ".join(_SEARCH_DIRS),
                                                    "; set %s" % env_var if env_var else ""))


def worker_bin():
    if os.environ.get("CHAT_WORKER_BIN"):
        return os.environ["CHAT_WORKER_BIN"]
    return os.path.join(os.path.dirname(os.path.abspath(harness.chatd_bin())), "chat-worker")


_children = set()
_children_lock = threading.Lock()


def _kill_all_children():
    with _children_lock:
        procs = list(_children)
    for p in procs:
        try:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        except Exception:  # noqa: BLE001
            pass


atexit.register(_kill_all_children)

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None
_PR_SET_PDEATHSIG = 1


def _pdeathsig():
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def popen(args, **kw):
    """subprocess.Popen that registers the child for kill-at-exit (and PDEATHSIG from the main thread)."""
    if threading.current_thread() is threading.main_thread() and sys.platform.startswith("linux"):
        kw.setdefault("preexec_fn", _pdeathsig)
    p = subprocess.Popen(args, **kw)
    with _children_lock:
        _children.add(p)
    return p


def _forget(p):
    with _children_lock:
        _children.discard(p)


def wait_until(pred, timeout, interval=0.05, msg=None):
    """Polls pred() until truthy (returns its value) or raises AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError("%s: not true within %.1fs%s" % (msg or "condition", timeout,
                                                                   " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)


def demo_reply(message, turns=0):
    """The demo provider's reply (src/providers/demo_provider.cpp, DemoProvider::reply_for)."""
    quoted = "".join(" " if c in "\n\r\t" else c for c in message)
    reply = ("Hello! This is the demo assistant of the Universal Chat Interface. You said: \"" + quoted + "\". ")
    reply += ("This is the first message of our conversation. " if turns == 0
              else "We have exchanged %d earlier messages in this conversation. " % turns)
    reply += ("Every word of this reply travels as a numbered chunk over the message bus, is put back in order by "
              "the pod, and reaches each of your open streams. When the reply is complete it is stored once in the "
              "database. Set an AI provider to get real answers instead of this one.")
    return reply


def port_open(port, host=HOST, timeout=0.5):
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        s.close()
        return True
    except OSError:
        return False


def _keep_logs():
    return os.environ.get("E2E_KEEP_LOGS") == "1"


class _ChildProcess:
    """A child server with its own temp dir and log file."""

    kind = "child"

    def __init__(self, name, tmpdir=None):
        self.name = name
        self.own_tmp = tmpdir is None
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="chatd-e2e-%s-" % name)
        os.makedirs(self.tmpdir, exist_ok=True)
        self.log_path = os.path.join(self.tmpdir, "%s.log" % name)
        self.proc = None
        self._log = None

    def _spawn(self, args, env=None):
        self._close_log()
        self._log = open(self.log_path, "ab")
        self._log.write(("=== start %r\n" % (args,)).encode())
        self._log.flush()
        self.proc = popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          cwd=self.tmpdir, env=env)

    def _close_log(self):
        if self._log:
            try:
                self._log.close()
            except OSError:
                pass
            self._log = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Signal (SIGTERM), then SIGKILL after timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        _forget(self.proc)
        self._close_log()
        return self.proc.returncode

    def kill(self):
        """kill -9 and reap."""
        return self.stop(timeout=10.0, sig=signal.SIGKILL)

    def cleanup(self):
        self.kill()
        if self.own_tmp and not _keep_logs():
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log(self, tail=20000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return "(no log)"
        return data[-tail:].decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# nats-server
# --------------------------------------------------------------------------

class NatsServer(_ChildProcess):
    """nats-server -js -a 127.0.0.1 -p <port> -sd <tmp> [-m <monitor port>]."""

    kind = "nats"

    def __init__(self, port=None, monitor=True, jetstream=True, name="nats", tmpdir=None, monitor_port=None,
                 extra_args=(), env=None):
        super().__init__(name, tmpdir)
        self.env = dict(os.environ, **env) if env else None  # e.g. passwords a config file names
        self.port = port
        self.monitor_port = monitor_port
        self.monitor = monitor
        self.jetstream = jetstream
        self.store_dir = os.path.join(self.tmpdir, "jetstream")
        self.extra_args = list(extra_args)  # e.g. cluster settings (routes, server name)

    @property
    def url(self):
        return "nats://%s:%d" % (HOST, self.port)

    def start(self, timeout=15.0):
        binary = find_binary("nats-server", "CHAT_NATS_SERVER")
        fixed = self.port is not None
        for attempt in range(3):
            if not fixed:
                self.port = free_port()
            if self.monitor and (self.monitor_port is None or not fixed):
                self.monitor_port = free_port()
            args = [binary, "-a", HOST, "-p", str(self.port)]
            if self.jetstream:
                args += ["-js", "-sd", self.store_dir]
            if self.monitor:
                args += ["-m", str(self.monitor_port)]
            self._spawn(args + self.extra_args, env=self.env)
            try:
                self._wait_ready(timeout)
                return self
            except StartError:
                log = self.log()
                self.kill()
                if not fixed and attempt < 2 and "address already in use" in log.lower():
                    continue
                raise
        raise StartError("could not start nats-server")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError("nats-server exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
            try:
                s = socket.create_connection((HOST, self.port), timeout=1.0)
                try:
                    s.settimeout(1.0)
                    if s.recv(4096).startswith(b"INFO "):
                        if not self.monitor or port_open(self.monitor_port):
                            return
                finally:
                    s.close()
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise StartError("nats-server not ready on %d within %.0fs (%r); log:\n%s" % (self.port, timeout, last,
                                                                                      self.log()))

    def restart(self, down_for=0.0, timeout=15.0):
        """Stops the server and starts it again on the same port (and store dir)."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        return self.start(timeout)

    def connz(self, subs=True):
        """The monitoring endpoint /connz (needs monitor=True)."""
        if not self.monitor:
            raise AssertionError("nats-server started without monitoring port")
        path = "/connz?limit=1024" + ("&subs=1" if subs else "")
        r = http_request(self.monitor_port, "GET", path, timeout=5.0, openapi=False)
        if r.status != 200:
            raise AssertionError("/connz -> %s" % r.status)
        return r.json()

    def subscriptions(self):
        """{connection name or cid: [subjects]} from /connz."""
        out = {}
        for c in self.connz().get("connections") or []:
            key = c.get("name") or "cid%s" % c.get("cid")
            out.setdefault(key, []).extend(c.get("subscriptions_list") or [])
        return out

    def stream_details(self):
        """Every JetStream stream's /jsz detail, with its consumers."""
        r = http_request(self.monitor_port, "GET", "/jsz?consumers=true", timeout=5.0, openapi=False)
        if r.status != 200:
            raise AssertionError("/jsz -> %s" % r.status)
        return [d for account in r.json().get("account_details") or [] for d in account.get("stream_detail") or []]

    def pull_waiting(self, consumer):
        """Pull requests the JetStream consumer holds (each idle worker keeps one open)."""
        for stream in self.stream_details():
            for c in stream.get("consumer_detail") or []:
                if c.get("name") == consumer:
                    return int(c.get("num_waiting") or 0)
        return 0

    def stream_messages(self, stream):
        """How many messages the JetStream stream holds now."""
        for detail in self.stream_details():
            if detail.get("name") == stream:
                return int((detail.get("state") or {}).get("messages") or 0)
        raise AssertionError("no stream %s in /jsz" % stream)

    def count_subscribers(self, subject):
        """How many client connections hold a subscription with exactly this subject."""
        n = 0
        for c in self.connz().get("connections") or []:
            if subject in (c.get("subscriptions_list") or []):
                n += 1
        return n


# --------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------

class RedisServer(_ChildProcess):
    """redis-server --port <port> --bind 127.0.0.1 --save '' --appendonly no --dir <tmp>."""

    kind = "redis"

    def __init__(self, port=None, name="redis", tmpdir=None, acl_user=None):
        """acl_user=(name, password): that ACL user only; the default user is off."""
        super().__init__(name, tmpdir)
        self.port = port
        self.acl_user = acl_user
        self.data_dir = os.path.join(self.tmpdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)

    def start(self, timeout=15.0):
        binary = find_binary("redis-server", "CHAT_REDIS_SERVER")
        fixed = self.port is not None
        for attempt in range(3):
            if not fixed:
                self.port = free_port()
            acl = []
            if self.acl_user:
                user, password = self.acl_user
                acl = ["--user", "default", "off", "--user", user, "on", ">" + password, "~*", "&*", "+@all"]
            self._spawn([binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                         "--dir", self.data_dir] + acl)
            try:
                self._wait_ready(timeout)
                return self
            except StartError:
                log = self.log()
                self.kill()
                if not fixed and attempt < 2 and "address already in use" in log.lower():
                    continue
                raise
        raise StartError("could not start redis-server")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError("redis-server exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
            try:
                c = self.client(timeout=1.0)
                try:
                    if c.execute("PING") == "PONG":
                        return
                finally:
                    c.close()
            except (OSError, RedisError, EOFError) as e:
                last = e
            time.sleep(0.05)
        raise StartError("redis-server not ready on %d within %.0fs (%r); log:\n%s" % (self.port, timeout, last,
                                                                                       self.log()))

    def restart(self, down_for=0.0, timeout=15.0):
        self.stop()
        if down_for:
            time.sleep(down_for)
        return self.start(timeout)

    def client(self, timeout=5.0):
        c = RedisClient(self.port, timeout=timeout)
        if self.acl_user:
            c.execute("AUTH", *self.acl_user)
        return c


# --------------------------------------------------------------------------
# minimal NATS client (text protocol)
# --------------------------------------------------------------------------

class NatsMsg:
    __slots__ = ("subject", "sid", "reply", "data", "received_at")

    def __init__(self, subject, sid, reply, data):
        self.subject, self.sid, self.reply, self.data = subject, sid, reply, data
        self.received_at = time.monotonic()

    def json(self):
        return json.loads(self.data.decode("utf-8"))

    def __repr__(self):
        return "<NatsMsg %s %r>" % (self.subject, self.data[:200])


class NatsSubscription:
    def __init__(self, client, sid, subject, queue_group, callback):
        self.client, self.sid, self.subject, self.queue_group = client, sid, subject, queue_group
        self.callback = callback
        self.messages = queue.Queue()
        self.received = []       # every message, in arrival order
        self._lock = threading.Lock()

    def _deliver(self, msg):
        with self._lock:
            self.received.append(msg)
        if self.callback is not None:
            try:
                self.callback(msg)
            except Exception as e:  # noqa: BLE001
                sys.stderr.write("NatsClient callback error on %s: %r\n" % (msg.subject, e))
        else:
            self.messages.put(msg)

    def next(self, timeout=5.0):
        """Next message; raises queue.Empty after timeout."""
        return self.messages.get(timeout=timeout)

    def snapshot(self):
        with self._lock:
            return list(self.received)

    def unsubscribe(self, max_msgs=None):
        self.client.unsubscribe(self, max_msgs)


class NatsError(Exception):
    pass


class NatsClient:
    """Minimal NATS client: one socket, one reader thread.

    Callbacks run on the reader thread (they may publish; they must not wait for a flush).
    Subscriptions without a callback queue their messages (sub.next(timeout)).
    """

    def __init__(self, url_or_port, name="e2e-client", timeout=5.0, connect=True, login=None):
        """login: CONNECT fields such as {"user": ..., "pass": ...} or {"auth_token": ...}."""
        self.login = dict(login or {})
        if isinstance(url_or_port, int):
            self.host, self.port = HOST, url_or_port
        else:
            m = re.match(r"^(?:nats://)?([^:/]+):(\d+)/?$", url_or_port)
            if not m:
                raise ValueError("bad NATS url %r" % url_or_port)
            self.host, self.port = m.group(1), int(m.group(2))
        self.name = name
        self.timeout = timeout
        self.sock = None
        self.server_info = None
        self.errors = []
        self._subs = {}
        self._next_sid = 1
        self._wlock = threading.Lock()
        self._slock = threading.Lock()
        self._pongs = 0
        self._pings_sent = 0
        self._pong_cond = threading.Condition()
        self._reader = None
        self._closed = False
        self.connected = False
        if connect:
            self.connect()

    # -- connection ----------------------------------------------------------
    def connect(self):
        deadline = time.monotonic() + self.timeout
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        while b"\r\n" not in buf:
            if time.monotonic() > deadline:
                raise NatsError("no INFO from %s:%d" % (self.host, self.port))
            data = self.sock.recv(65536)
            if not data:
                raise NatsError("connection closed before INFO")
            buf += data
        line, _, rest = bytes(buf).partition(b"\r\n")
        if not line.startswith(b"INFO "):
            raise NatsError("expected INFO, got %r" % line[:200])
        self.server_info = json.loads(line[5:].decode())
        opts = {"verbose": False, "pedantic": False, "tls_required": False, "name": self.name,
                "lang": "python-e2e", "version": "0.1", "protocol": 1, "echo": True, "headers": False}
        opts.update(self.login)
        self._send(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
        self.sock.settimeout(None)
        self.connected = True
        self._rbuf = bytearray(rest)
        self._reader = threading.Thread(target=self._read_loop, name="nats-reader-%s" % self.name, daemon=True)
        self._reader.start()
        self.flush(self.timeout)
        return self

    def _send(self, data):
        with self._wlock:
            if self.sock is None:
                raise NatsError("not connected")
            try:
                self.sock.sendall(data)
            except OSError as e:
                self.connected = False
                raise NatsError("send failed: %r" % e)

    def _read_loop(self):
        sock = self.sock
        buf = self._rbuf
        try:
            while True:
                while True:
                    i = buf.find(b"\r\n")
                    if i < 0:
                        break
                    line = bytes(buf[:i])
                    op = line.split(b" ", 1)[0].upper()
                    if op == b"MSG":
                        parts = line.split(b" ")
                        if len(parts) == 4:
                            _, subj, sid, size = parts
                            reply = None
                        elif len(parts) == 5:
                            _, subj, sid, reply, size = parts
                            reply = reply.decode()
                        else:
                            raise NatsError("bad MSG line %r" % line)
                        size = int(size)
                        if len(buf) < i + 2 + size + 2:
                            break  # wait for the payload
                        payload = bytes(buf[i + 2:i + 2 + size])
                        del buf[:i + 2 + size + 2]
                        with self._slock:
                            sub = self._subs.get(int(sid))
                        if sub is not None:
                            sub._deliver(NatsMsg(subj.decode(), int(sid), reply, payload))
                        continue
                    del buf[:i + 2]
                    if op == b"PING":
                        self._send(b"PONG\r\n")
                    elif op == b"PONG":
                        with self._pong_cond:
                            self._pongs += 1
                            self._pong_cond.notify_all()
                    elif op == b"-ERR":
                        self.errors.append(line.decode(errors="replace"))
                    elif op in (b"+OK", b"INFO"):
                        pass
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
        except (OSError, NatsError):
            pass
        finally:
            self.connected = False
            with self._pong_cond:
                self._pong_cond.notify_all()

    def close(self):
        self._closed = True
        self.connected = False
        s, self.sock = self.sock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- protocol --------------------------------------------------------------
    def flush(self, timeout=5.0):
        """PING and wait for the PONG: everything sent before is processed by the server."""
        with self._pong_cond:
            self._pings_sent += 1
            want = self._pings_sent
        self._send(b"PING\r\n")
        deadline = time.monotonic() + timeout
        with self._pong_cond:
            while self._pongs < want:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NatsError("no PONG within %.1fs" % timeout)
                if not self.connected:
                    raise NatsError("connection lost while waiting for PONG")
                self._pong_cond.wait(remaining)

    def subscribe(self, subject, queue_group=None, callback=None):
        with self._slock:
            sid = self._next_sid
            self._next_sid += 1
            sub = NatsSubscription(self, sid, subject, queue_group, callback)
            self._subs[sid] = sub
        if queue_group:
            self._send(("SUB %s %s %d\r\n" % (subject, queue_group, sid)).encode())
        else:
            self._send(("SUB %s %d\r\n" % (subject, sid)).encode())
        return sub

    def unsubscribe(self, sub, max_msgs=None):
        if max_msgs:
            self._send(("UNSUB %d %d\r\n" % (sub.sid, max_msgs)).encode())
        else:
            self._send(("UNSUB %d\r\n" % sub.sid).encode())
            with self._slock:
                self._subs.pop(sub.sid, None)

    def publish(self, subject, payload=b"", reply=None):
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
        elif isinstance(payload, str):
            payload = payload.encode()
        if reply:
            head = "PUB %s %s %d\r\n" % (subject, reply, len(payload))
        else:
            head = "PUB %s %d\r\n" % (subject, len(payload))
        self._send(head.encode() + payload + b"\r\n")

    def request(self, subject, payload=b"", timeout=5.0):
        inbox = "_INBOX.%s" % uuid.uuid4().hex
        sub = self.subscribe(inbox)
        try:
            self.unsubscribe(sub, 1)
            self.publish(subject, payload, reply=inbox)
            return sub.next(timeout)
        finally:
            with self._slock:
                self._subs.pop(sub.sid, None)


# --------------------------------------------------------------------------
# minimal Redis client (RESP2)
# --------------------------------------------------------------------------

class RedisError(Exception):
    pass


class RedisClient:
    def __init__(self, port, host=HOST, timeout=5.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None
        self.buf = bytearray()

    def _connect(self):
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.buf = bytearray()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            else:
                b = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("redis closed the connection")
        self.buf += data

    def _read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[:n + 2]
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise RedisError("bad RESP reply %r" % line[:100])

    def execute(self, *args):
        """Runs one command; returns str/int/list/None; raises RedisError on an error reply,
        OSError/EOFError when Redis is unreachable (the next call reconnects)."""
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(self._encode(args))
            r = self._read()
        except (OSError, EOFError):
            self.close()
            raise
        if isinstance(r, RedisError):
            raise r
        return r

    # helpers
    def ping(self):
        return self.execute("PING") == "PONG"

    def keys(self, pattern="*"):
        out, cursor = set(), "0"
        while True:
            cursor, batch = self.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            out.update(batch)
            if cursor == "0":
                return sorted(out)

    def smembers(self, key):
        return set(self.execute("SMEMBERS", key))

    def hgetall(self, key):
        flat = self.execute("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2]))

    def get(self, key):
        return self.execute("GET", key)

    def ttl(self, key):
        return self.execute("TTL", key)

    def type(self, key):
        return self.execute("TYPE", key)

    def flushall(self):
        return self.execute("FLUSHALL")


# --------------------------------------------------------------------------
# chatd pods and chat-workers
# --------------------------------------------------------------------------

class PodServer(ChatdServer):
    """A chatd pod with a fixed POD_ID; spawn goes through infra.popen; restart keeps the port."""

    kind = "pod"

    def __init__(self, pod_id, env=None, **kw):
        env = dict(env or {})
        env["POD_ID"] = pod_id
        super().__init__(name=pod_id, env=env, **kw)
        self.pod_id = pod_id

    def spawn(self, port=None):
        binary = harness.chatd_bin()
        if not os.path.exists(binary):
            raise StartError("chatd binary not found at %s (set CHATD_BIN)" % binary)
        self.port = port or free_port()
        if self._log:
            self._log.close()
        self._log = open(self.log_path, "ab")
        self._log.write(("=== start %s port %d env %r\n" % (binary, self.port, self.extra_env)).encode())
        self._log.flush()
        self.proc = popen([binary] + self.args, env=self.build_env(self.port), stdout=self._log,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmpdir)
        self.exit_code = None
        return self

    def restart(self, timeout=20.0):
        """Starts again (after stop/kill) on the same port and DB."""
        if self.alive():
            self.stop()
        self.killed = False
        for _ in range(50):  # the old socket may linger a moment
            self.spawn(self.port)
            try:
                self.wait_healthy(timeout)
                return self
            except StartError:
                if self.proc.poll() is not None and "ddress already in use" in self.log(2000):
                    time.sleep(0.2)
                    continue
                raise
        raise StartError("%s: port %d stayed busy" % (self.pod_id, self.port))

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        _forget(self.proc)

    def ready(self):
        try:
            return http_request(self.port, "GET", "/ready", timeout=2.0).status == 200
        except (OSError, EOFError, AssertionError):
            return False

    def wait_ready(self, timeout=20.0):
        wait_until(self.ready, timeout, msg="%s /ready 200" % self.pod_id)


class WorkerProcess(_ChildProcess):
    kind = "worker"

    def __init__(self, name="worker", env=None, tmpdir=None):
        super().__init__(name, tmpdir)
        self.extra_env = dict(env or {})

    def build_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(harness._SCRUB_PREFIXES)}
        env["LOG_LEVEL"] = "info"
        env.update(self.extra_env)
        return env

    def start(self, timeout=15.0):
        binary = worker_bin()
        if not os.path.exists(binary):
            raise StartError("chat-worker binary not found at %s (set CHAT_WORKER_BIN)" % binary)
        self._spawn([binary], env=self.build_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError("chat-worker exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
            if "worker_started" in self.log(200000):
                return self
            time.sleep(0.05)
        raise StartError("chat-worker did not log worker_started within %.0fs; log:\n%s" % (timeout, self.log()))

    def restart(self, timeout=15.0):
        if self.alive():
            self.stop()
        return self.start(timeout)

    def kill9(self):
        self.kill()


EXECUTE_SUBJECT = "chat.workflow.execute.*"
WORKER_QUEUE = "workflow-workers"
WORK_CONSUMER = "workflow-workers"  # the workers' JetStream pull consumer


class Cluster:
    """NATS + Redis + pods + workers for one test (or test class).

    pods are named pod_ids (default pod-a, pod-b, ...); pod_env / worker_env add settings.
    jetstream=False runs core NATS only (NATS_JETSTREAM=false), the path for servers without it.
    """

    def __init__(self, pods=2, workers=1, pod_ids=None, pod_env=None, worker_env=None, redis=True, nats=True,
                 tag=None, jetstream=True, nats_args=(), nats_env=None, redis_acl_user=None):
        self.tag = tag or uuid.uuid4().hex[:6]
        self.tmpdir = tempfile.mkdtemp(prefix="chatd-e2e-cluster-")
        self.pod_ids = list(pod_ids or ["pod-%s" % chr(ord("a") + i) for i in range(pods)])
        self.pod_env = dict(pod_env or {})
        self.worker_env = dict(worker_env or {})
        self.nats = NatsServer(tmpdir=os.path.join(self.tmpdir, "nats"), extra_args=nats_args,
                               env=nats_env) if nats else None
        self.redis = RedisServer(tmpdir=os.path.join(self.tmpdir, "redis"),
                                 acl_user=redis_acl_user) if redis else None
        self.n_workers = workers
        self.jetstream = bool(nats) and jetstream
        self.pods = []
        self.workers = []
        self._clients = []

    # -- lifecycle ---------------------------------------------------------------
    def infra_env(self):
        env = {}
        if self.nats:
            env["NATS_URL"] = self.nats.url
            env["NATS_JETSTREAM"] = "true" if self.jetstream else "false"
        if self.redis:
            env["REDIS_HOST"] = HOST
            env["REDIS_PORT"] = str(self.redis.port)
        return env

    def start(self, timeout=30.0):
        try:
            if self.nats:
                self.nats.start()
            if self.redis:
                self.redis.start()
            for pid in self.pod_ids:
                self.add_pod(pid, start=True, wait=False)
            for i in range(self.n_workers):
                self.add_worker(start=True, wait=False)
            self.wait_ready(timeout)
        except BaseException:
            sys.stderr.write(self.dump_logs())
            self.cleanup()
            raise
        return self

    def add_pod(self, pod_id, env=None, start=True, wait=True):
        e = self.infra_env()
        e.update(self.pod_env)
        e.update(env or {})
        pod = PodServer(pod_id, env=e)
        self.pods.append(pod)
        if start:
            pod.start()
            if wait:
                self.wait_pod_ready(pod)
        return pod

    def add_worker(self, env=None, start=True, wait=True):
        e = self.infra_env()
        e.update(self.worker_env)
        e.update(env or {})
        w = WorkerProcess(name="worker-%d" % (len(self.workers) + 1), env=e,
                          tmpdir=os.path.join(self.tmpdir, "worker-%d" % (len(self.workers) + 1)))
        self.workers.append(w)
        if start:
            w.start()
            if wait:
                self.wait_workers_subscribed()
        return w

    def pod(self, pod_id):
        for p in self.pods:
            if p.pod_id == pod_id:
                return p
        raise KeyError(pod_id)

    def __getitem__(self, i):
        return self.pods[i]

    def wait_pod_ready(self, pod, timeout=20.0):
        pod.wait_ready(timeout)
        if self.nats and self.nats.monitor:
            subj = "chat.pod.%s.response" % pod.pod_id
            wait_until(lambda: self.nats.count_subscribers(subj) >= 1, timeout,
                       msg="%s subscribed to %s" % (pod.pod_id, subj))

    def wait_workers_subscribed(self, timeout=20.0):
        if not (self.nats and self.nats.monitor):
            return
        want = sum(1 for w in self.workers if w.alive())
        if self.jetstream:
            wait_until(lambda: self.nats.pull_waiting(WORK_CONSUMER) >= want, timeout,
                       msg="%d worker(s) pulling from the %s consumer" % (want, WORK_CONSUMER))
            return
        wait_until(lambda: self.nats.count_subscribers(EXECUTE_SUBJECT) >= want, timeout,
                   msg="%d worker(s) subscribed to %s" % (want, EXECUTE_SUBJECT))

    def wait_ready(self, timeout=30.0):
        for p in self.pods:
            if p.alive():
                self.wait_pod_ready(p, timeout)
        self.wait_workers_subscribed(timeout)

    def nats_client(self, name="e2e-test"):
        c = NatsClient(self.nats.port, name=name)
        self._clients.append(c)
        return c

    def redis_client(self):
        c = self.redis.client()
        self._clients.append(c)
        return c

    def processes(self):
        out = []
        if self.nats:
            out.append(self.nats)
        if self.redis:
            out.append(self.redis)
        return out + list(self.pods) + list(self.workers)

    def cleanup(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        self._clients = []
        for w in self.workers:
            w.kill()
        for p in self.pods:
            p.kill()
            _forget(p.proc)
        for s in (self.nats, self.redis):
            if s:
                s.kill()
        if not _keep_logs():
            for p in self.pods:
                p.cleanup()
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def stop_gracefully(self):
        """SIGTERM to pods and workers; returns a list of problems (not exited 0 in time)."""
        problems = []
        for p in self.pods:
            if not p.alive():
                continue
            code = p.stop(timeout=20.0)
            if p.killed or code != 0:
                problems.append("%s: exit %s after SIGTERM (killed=%s)" % (p.pod_id, code, p.killed))
        for w in self.workers:
            if not w.alive():
                continue
            code = w.stop(timeout=20.0)
            if code != 0:
                problems.append("%s: exit %s after SIGTERM" % (w.name, code))
        return problems

    def dump_logs(self, tail=8000):
        parts = []
        for p in self.processes():
            name = getattr(p, "pod_id", None) or p.name
            parts.append("\n----- log of %s -----\n%s\n" % (name, p.log(tail)))
        return "".join(parts)


START_LIMIT = 20.0  # a start-up error ends the program well within this


def run_to_exit(program, env):
    """Runs chatd ("pod") or chat-worker with `env`; returns (exit code or None, output)."""
    if program == "pod":
        child = PodServer("pod-refused", env=env)
        args, full_env = [harness.chatd_bin()], child.build_env(free_port())
    else:
        child = WorkerProcess(env=env)
        args, full_env = [worker_bin()], child.build_env()
    try:
        p = subprocess.run(args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=START_LIMIT)
    except subprocess.TimeoutExpired as e:
        return None, (e.output or b"").decode(errors="replace")
    finally:
        child.cleanup()  # never spawned: removes its temp dir
    return p.returncode, p.stdout.decode(errors="replace")


class ClusterTestCase(unittest.TestCase):
    """Base class: self.cluster / cls.cluster logs are printed when a test fails; clients in
    self.clients are closed in tearDown."""

    maxDiff = 4000
    cluster = None

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def track(self, client):
        self.clients.append(client)
        return client

    def new_cluster(self, **kw):
        c = Cluster(**kw)
        self._local_clusters.append(c)  # cleaned up in run(), after a failed test printed the logs
        c.start()
        return c

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        self._local_clusters = []
        try:
            super().run(result)
            if len(result.failures) + len(result.errors) > before:
                for c in [type(self).cluster] + self._local_clusters:
                    if c is not None:
                        sys.stderr.write("\n===== cluster logs (test %s failed) =====%s===== end =====\n"
                                         % (self.id(), c.dump_logs()))
        finally:
            for c in self._local_clusters:
                c.cleanup()
        return result

    def open_sse(self, pod, session_id, user_id, **kw):
        c = self.track(pod.sse(session_id, user_id, **kw))
        data = c.connected()
        return c, data
