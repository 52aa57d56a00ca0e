"""A real PostgreSQL 15 for the end-to-end tests (standard library only).

PostgresServer runs `initdb` into a fresh temporary directory and starts `postgres` on a free
127.0.0.1 port with its unix socket inside that directory. PostgreSQL refuses to run as root, so
when the tests run as root the cluster belongs to the `postgres` user and every PostgreSQL program
(initdb, postgres, psql, pg_isready) runs as that user. stop() and start() again reuse the same data
directory and port (an outage as chatd sees it). Every wait is bounded.

The server process is a direct child started with PR_SET_PDEATHSIG, so a test process that dies
(even by SIGKILL) takes its PostgreSQL with it; an atexit hook stops whatever is still running.

Environment:
  CHAT_PG_BIN       directory of the PostgreSQL programs (default /usr/lib/postgresql/15/bin)
  E2E_KEEP_LOGS=1   keep the cluster's temp dir (data, log) instead of removing it

    pg = PostgresServer().start()
    db = pg.create_database()
    srv = ChatdServer(env=pg.chatd_env(db)) ...
    rows = pg.query(db, "SELECT * FROM messages WHERE message_id = :'id'", id=mid)
    pg.stop(); ...; pg.start()
    pg.cleanup()
"""

import atexit
import ctypes
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

from harness import free_port

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
HOST = "127.0.0.1"
PG_USER = "postgres"
# Spaces, quotes, '=' and a backslash: every connection proves chatd quotes its conninfo right.
PG_PASSWORD = "e2e pw 'quoted' = \\ \"x\""

_PR_SET_PDEATHSIG = 1
_live = set()
_live_lock = threading.Lock()


def pg_bin(name):
    return os.path.join(os.environ.get("CHAT_PG_BIN") or DEFAULT_PG_BIN, name)


def _die_with_parent():
    """preexec_fn: the child gets SIGQUIT (PostgreSQL's immediate shutdown) when we die."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; the atexit hook still stops it
        pass


class PgError(AssertionError):
    pass


class PostgresServer:
    """One PostgreSQL cluster in a temp dir. Not thread-safe; use from the test's main thread."""

    def __init__(self, name="pg", settings=None):
        self.name = name
        self.settings = dict(settings or {})
        self.tmpdir = tempfile.mkdtemp(prefix="chatd-e2e-%s-" % name)
        self.data_dir = os.path.join(self.tmpdir, "data")
        self.sock_dir = os.path.join(self.tmpdir, "sock")
        self.log_path = os.path.join(self.tmpdir, "postgres.log")
        self.port = None
        self.proc = None
        self._log = None
        self._initialized = False
        self._dbs = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam(PG_USER)
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            os.chown(self.tmpdir, self._uid, self._gid)
        os.makedirs(self.sock_dir)
        if self._as_postgres:
            os.chown(self.sock_dir, self._uid, self._gid)

    # -- process helpers ------------------------------------------------------
    def _run(self, argv, timeout=60.0, input=None, env=None, check=True):
        """Runs a PostgreSQL program (as the postgres user when we are root); returns CompletedProcess."""
        kw = {}
        if self._as_postgres:
            kw = {"user": self._uid, "group": self._gid, "extra_groups": []}
        full_env = dict(os.environ)
        full_env.pop("PGPASSFILE", None)
        full_env.update({"PGPASSWORD": PG_PASSWORD, "PGCONNECT_TIMEOUT": "5", "LC_ALL": "C.UTF-8",
                         "HOME": self.tmpdir})
        full_env.update(env or {})
        try:
            cp = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                                env=full_env, cwd=self.tmpdir, **kw)
        except subprocess.TimeoutExpired as e:
            raise PgError("%s timed out after %.0fs" % (os.path.basename(argv[0]), timeout)) from e
        if check and cp.returncode != 0:
            raise PgError("%s failed (%d): %s%s" % (" ".join(os.path.basename(a) if i == 0 else a
                                                              for i, a in enumerate(argv[:3])),
                                                     cp.returncode, cp.stderr.decode(errors="replace"),
                                                     cp.stdout.decode(errors="replace")[-2000:]))
        return cp

    def _init_cluster(self):
        if not os.path.exists(pg_bin("initdb")):
            raise PgError("PostgreSQL programs not found in %s (set CHAT_PG_BIN)" % os.path.dirname(pg_bin("initdb")))
        pwfile = os.path.join(self.tmpdir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(PG_PASSWORD + "\n")
        if self._as_postgres:
            os.chown(pwfile, self._uid, self._gid)
        os.chmod(pwfile, 0o600)
        self._run([pg_bin("initdb"), "-D", self.data_dir, "-U", PG_USER, "--pwfile=" + pwfile,
                   "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], timeout=120)
        os.unlink(pwfile)
        self._initialized = True

    def _launch(self):
        argv = [pg_bin("postgres"), "-D", self.data_dir, "-p", str(self.port), "-k", self.sock_dir,
                # fsync=off only skips flushes to disk: a committed transaction is in the WAL (the OS page
                # cache) and survives a crash of PostgreSQL itself, which is what the outage tests do.
                # synchronous_commit stays on: a commit that chatd saw must survive an immediate stop.
                "-c", "listen_addresses=" + HOST, "-c", "fsync=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB",
                "-c", "log_min_messages=warning", "-c", "log_connections=off"]
        for k, v in self.settings.items():
            argv += ["-c", "%s=%s" % (k, v)]
        kw = {}
        if self._as_postgres:
            kw = {"user": self._uid, "group": self._gid, "extra_groups": []}
        self._log = open(self.log_path, "ab")
        self._log.write(("=== start postgres port %d\n" % self.port).encode())
        self._log.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.tmpdir, env=env, preexec_fn=_die_with_parent, **kw)
        with _live_lock:
            _live.add(self)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            cp = self._run([pg_bin("pg_isready"), "-q", "-h", HOST, "-p", str(self.port), "-U", PG_USER,
                            "-d", "postgres", "-t", "2"], timeout=10, check=False)
            if cp.returncode == 0:
                # accepting connections; make sure authentication works too
                cp = self._run([pg_bin("psql"), "-X", "-q", "-h", HOST, "-p", str(self.port), "-U", PG_USER,
                                "-d", "postgres", "-At", "-c", "SELECT 1"], timeout=10, check=False)
                if cp.returncode == 0:
                    return True
            time.sleep(0.1)
        raise PgError("PostgreSQL not ready within %.0fs on port %s; log:\n%s" % (timeout, self.port, self.log_tail()))

    # -- lifecycle --------------------------------------------------------------
    def start(self, timeout=60.0):
        """initdb on first use, then starts the server (same port on a restart). No-op while running."""
        if self.running():
            return self
        if not self._initialized:
            self._init_cluster()
        restart = self.port is not None
        for attempt in range(5):
            if not restart:
                self.port = free_port()
            self._launch()
            if self._wait_ready(timeout):
                return self
            # the process exited during start-up
            self._close_log()
            log = self.log_tail()
            if "could not bind" in log or "already in use" in log:
                if restart:
                    time.sleep(0.5)  # our old port is briefly taken; try the same one again
                continue
            raise PgError("PostgreSQL exited with %s during start-up; log:\n%s" % (self.proc.returncode, log))
        raise PgError("PostgreSQL could not start (port races); log:\n%s" % self.log_tail())

    def stop(self, mode="fast", timeout=30.0):
        """Stops the server: 'fast' (SIGINT: clients disconnected, clean), 'immediate' (SIGQUIT) or 'kill'."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            sig = {"fast": signal.SIGINT, "smart": signal.SIGTERM, "immediate": signal.SIGQUIT,
                   "kill": signal.SIGKILL}[mode]
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGQUIT)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        self._close_log()
        with _live_lock:
            _live.discard(self)
        return self.proc.returncode

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self):
        self.stop(mode="immediate", timeout=15.0)
        if os.environ.get("E2E_KEEP_LOGS") != "1":
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, tail=8000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-tail:].decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"

    # -- databases and queries ----------------------------------------------------
    def create_database(self, name=None):
        """Creates an empty database; returns its name."""
        self._dbs += 1
        name = name or "e2e_%d_%s" % (self._dbs, uuid.uuid4().hex[:8])
        self.execute("postgres", 'CREATE DATABASE "%s"' % name)
        return name

    def chatd_env(self, database, **extra):
        """The DB_* settings that point chatd at `database`; its spill journal stays in our temp dir."""
        env = {"DB_HOST": HOST, "DB_PORT": str(self.port), "DB_USER": PG_USER, "DB_PASSWORD": PG_PASSWORD,
               "DB_NAME": database, "DB_SSLMODE": "disable",
               "DB_SPILL_DIR": os.path.join(self.tmpdir, "spill-" + database)}
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def _psql(self, database, sql, variables, timeout):
        if not self.running():
            raise PgError("PostgreSQL is not running")
        argv = [pg_bin("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.port),
                "-U", PG_USER, "-d", database]
        for k, v in variables.items():
            argv += ["-v", "%s=%s" % (k, v)]
        cp = self._run(argv, timeout=timeout, input=sql.encode("utf-8"))
        return cp.stdout.decode("utf-8")

    def execute(self, database, sql, timeout=30.0, **variables):
        """Runs SQL (psql variables :'name' are quoted literals of the keyword arguments); returns raw output."""
        return self._psql(database, sql.rstrip().rstrip(";") + ";\n", variables, timeout)

    def query(self, database, sql, timeout=30.0, **variables):
        """Rows of one SELECT as a list of dicts (values as PostgreSQL's to_json renders them)."""
        wrapped = "SELECT coalesce(json_agg(q), '[]'::json) FROM (%s) q;\n" % sql.rstrip().rstrip(";")
        out = self._psql(database, wrapped, variables, timeout).strip()
        try:
            return json.loads(out)
        except ValueError as e:
            raise PgError("psql output is not JSON (%s): %r" % (e, out[:500]))

    def scalar(self, database, sql, timeout=30.0, **variables):
        rows = self.query(database, sql, timeout, **variables)
        if not rows:
            return None
        return next(iter(rows[0].values()))

    def wait_rows(self, database, sql, predicate, timeout=30.0, interval=0.2, **variables):
        """Polls a query until predicate(rows) holds; returns the last rows (check predicate yourself)."""
        deadline = time.monotonic() + timeout
        rows = None
        while True:
            try:
                rows = self.query(database, sql, **variables)
                if predicate(rows):
                    return rows
            except PgError:
                if not self.running():
                    raise
            if time.monotonic() >= deadline:
                return rows
            time.sleep(interval)


@atexit.register
def _stop_all():
    with _live_lock:
        servers = list(_live)
    for s in servers:
        try:
            s.stop(mode="immediate", timeout=10.0)
        except Exception:  # noqa: BLE001
            pass
