#!/usr/bin/env bash
# A local cluster in the seed's layout, without containers: nginx on :80 in
# front of chatd pods pod-1..pod-3 on :8081..8083, nats-server -js on :4222,
# redis-server on :6379, PostgreSQL on :5432, two chat-workers; all on 127.0.0.1.
#
#   scripts/cluster.sh up|down|status|logs [name]
#
# Each piece has its own pid file and log under one run directory
# (CLUSTER_DIR, default run/cluster); `down` stops only what `up` started and
# says what it is waiting for. An `up` that fails names the step, shows the end
# of its log and stops what it had started, so it can simply be run again.
# Ports can be moved with CLUSTER_HTTP_PORT, CLUSTER_POD_BASE_PORT (pods at
# base+1..base+N), CLUSTER_PODS, CLUSTER_WORKERS, CLUSTER_NATS_PORT,
# CLUSTER_REDIS_PORT, CLUSTER_PG_PORT.
# NATS_NODES=3 runs a three-node JetStream cluster instead of one nats-server
# (clients on CLUSTER_NATS_PORT and the next two ports, routes 2000 above them,
# monitoring 4000 above them), with JS_REPLICAS=3: the layout for a production
# NATS. CLUSTER_POD_ENV adds settings to every pod ("VAR=value VAR2=value").
# CLUSTER_NGINX_WORKERS (default 1) runs that many nginx workers, each allowed
# 20,000 files and 19,000 connections, the listener shared by the kernel
# (reuseport): a proxied stream takes two connections, so 50,000 streams
# (bench/pods.py VIA=nginx) need six.
# NATS runs with deploy/nats/nats.conf: pods log in as chat-pod and workers as
# chat-worker, each with the subject permissions of its role, with passwords
# made at `up` and kept in $RUN_DIR/secrets.env (mode 600).
set -Eeuo pipefail  # -E: up's ERR trap covers the functions it calls

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${CLUSTER_DIR:-$ROOT/run/cluster}
BUILD=${BUILD:-$ROOT/build}
HTTP_PORT=${CLUSTER_HTTP_PORT:-80}
POD_BASE=${CLUSTER_POD_BASE_PORT:-8080}
PODS=${CLUSTER_PODS:-3}
WORKERS=${CLUSTER_WORKERS:-2}
NATS_PORT=${CLUSTER_NATS_PORT:-4222}
REDIS_PORT=${CLUSTER_REDIS_PORT:-6379}
PG_PORT=${CLUSTER_PG_PORT:-5432}
NATS_NODES=${NATS_NODES:-1}
case "$NATS_NODES" in 1 | 3) ;; *) echo "cluster: NATS_NODES must be 1 or 3" >&2; exit 2 ;; esac
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# The end of a log, indented, on stderr.
show_tail() {  # file
  [ -s "$1" ] || return 0
  log "last lines of $1:"
  tail -n 20 "$1" | sed 's/^/    /' >&2
}

# `up` failed at a step: say which, show its logs, stop what was already started
# (so a failed `up` leaves nothing running and can simply be run again).
fail_up() {  # step, log files...
  trap - ERR
  local step=$1 f
  shift
  log "up failed: $step"
  for f in "$@"; do show_tail "$f"; done
  if [ "$step" = initdb ] && ! as_postgres test -x "$RUN_DIR"; then
    log "the postgres user cannot enter $RUN_DIR (a folder above it is closed to it); choose another CLUSTER_DIR"
  fi
  log "stopping what was started"
  down
  exit 1
}

# One step of `up` with its output in logs/<name>.log.
step() {  # name, command...
  local name=$1
  shift
  "$@" >"$RUN_DIR/logs/$name.log" 2>&1 || fail_up "$name" "$RUN_DIR/logs/$name.log"
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A pid that exists and is not a zombie (processes left by `up` are reparented to
# init; a slow reaper must not make `down` wait for an exited process).
running() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }

alive() { [ -f "$RUN_DIR/$1.pid" ] && running "$(cat "$RUN_DIR/$1.pid")"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # name, command...: retries for 30 s
  local name=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail_up "$name did not become ready in 30 s" "$RUN_DIR/logs/$name.log" "$RUN_DIR/logs/$name-error.log"
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

start_bg() {  # name, env/command...: runs in the background with pid file and log
  local name=$1; shift
  if alive "$name"; then log "$name already running"; return; fi
  log "starting $name"
  nohup "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
}

check_ports() {
  local p
  for p in "$HTTP_PORT" $(seq "$NATS_PORT" $((NATS_PORT + NATS_NODES - 1))) "$REDIS_PORT" "$PG_PORT" \
           $(seq $((POD_BASE + 1)) $((POD_BASE + PODS))); do
    port_free "$p" || die "port $p is in use; stop what holds it or move the cluster (see the header of $0)"
  done
}

nats_name() { [ "$1" -eq 1 ] && echo nats || echo "nats-$1"; }

# nats-server parses a variable's value as a configuration value: a secret that
# starts with a digit would be read as a number, so it starts with letters.
random_secret() { printf 'pw%s' "$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }

# The role passwords of deploy/nats/nats.conf, made once per run directory.
make_secrets() {
  local f="$RUN_DIR/secrets.env"
  [ -s "$f" ] && return
  (umask 077 && printf 'CHAT_NATS_POD_PASSWORD=%s\nCHAT_NATS_WORKER_PASSWORD=%s\n' \
    "$(random_secret)" "$(random_secret)" >"$f")
}

secret() { sed -n "s/^$1=//p" "$RUN_DIR/secrets.env"; }

nats_server() {  # name, args...: nats-server with the role permissions
  local name=$1; shift
  start_bg "$name" env CHAT_NATS_POD_PASSWORD="$(secret CHAT_NATS_POD_PASSWORD)" \
    CHAT_NATS_WORKER_PASSWORD="$(secret CHAT_NATS_WORKER_PASSWORD)" \
    nats-server -c "$ROOT/deploy/nats/nats.conf" "$@"
}

# One nats-server, or NATS_NODES JetStream nodes with routes to each other.
start_nats() {
  if [ "$NATS_NODES" -eq 1 ]; then
    nats_server nats -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$RUN_DIR/nats"
    wait_for nats bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
    return
  fi
  local i j routes name
  for i in $(seq 1 "$NATS_NODES"); do
    routes=""
    for j in $(seq 1 "$NATS_NODES"); do
      [ "$i" -eq "$j" ] || routes+="${routes:+,}nats://127.0.0.1:$((NATS_PORT + 2000 + j - 1))"
    done
    name=$(nats_name "$i")
    mkdir -p "$RUN_DIR/$name"
    nats_server "$name" -js -a 127.0.0.1 -p $((NATS_PORT + i - 1)) -m $((NATS_PORT + 4000 + i - 1)) \
      -sd "$RUN_DIR/$name" --server_name "$name" --cluster_name chat-local \
      --cluster "nats://127.0.0.1:$((NATS_PORT + 2000 + i - 1))" --routes "$routes"
  done
  # Ready once JetStream has a meta leader (healthz fails until then).
  for i in $(seq 1 "$NATS_NODES"); do
    wait_for "$(nats_name "$i")" http_ok "http://127.0.0.1:$((NATS_PORT + 4000 + i - 1))/healthz?js-enabled-only=true"
  done
}

nats_url() {
  local i url=""
  for i in $(seq 1 "$NATS_NODES"); do url+="${url:+,}nats://127.0.0.1:$((NATS_PORT + i - 1))"; done
  echo "$url"
}

up() {
  "$ROOT/scripts/install-deps.sh"
  if [ ! -x "$BUILD/chatd" ] || [ ! -x "$BUILD/chat-worker" ]; then
    log "building chatd and chat-worker"
    [ -f "$BUILD/build.ninja" ] || cmake -S "$ROOT" -B "$BUILD" -G Ninja >/dev/null
    cmake --build "$BUILD" --target chatd chat-worker >/dev/null
  fi
  [ -f "$RUN_DIR/cluster.env" ] && die "a cluster is already up in $RUN_DIR (scripts/cluster.sh down first)"
  check_ports
  mkdir -p "$RUN_DIR/logs" "$RUN_DIR/nats" "$RUN_DIR/redis" "$RUN_DIR/nginx"
  chmod 755 "$RUN_DIR"
  echo "started=$(date -u +%FT%TZ)" >"$RUN_DIR/cluster.env"
  # From here on a failure stops what was started; anything not caught by a step
  # below is still reported with its line.
  trap 'fail_up "line $LINENO: $BASH_COMMAND"' ERR

  make_secrets
  start_nats

  start_bg redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$RUN_DIR/redis"
  wait_for redis redis-cli -p "$REDIS_PORT" ping

  mkdir -p "$RUN_DIR/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$RUN_DIR/pg"; fi
  if [ ! -f "$RUN_DIR/pg/PG_VERSION" ]; then
    log "initializing PostgreSQL in $RUN_DIR/pg"
    step initdb as_postgres "$PG_BIN/initdb" -D "$RUN_DIR/pg" -U postgres --auth=trust
  fi
  log "starting postgres"
  touch "$RUN_DIR/postgres.started"  # before the start: a half-started server is stopped too
  as_postgres "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" -l "$RUN_DIR/pg/server.log" -w \
    -o "-p $PG_PORT -k $RUN_DIR/pg -c listen_addresses=127.0.0.1" start >"$RUN_DIR/logs/postgres.log" 2>&1 ||
    fail_up "PostgreSQL did not start" "$RUN_DIR/logs/postgres.log" "$RUN_DIR/pg/server.log"
  if ! as_postgres "$PG_BIN/../bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='chat'" 2>"$RUN_DIR/logs/createdb.log" | grep -q 1; then
    step createdb as_postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE chat"
  fi

  local common=(NATS_URL="$(nats_url)" JS_REPLICAS="$NATS_NODES" REDIS_HOST=127.0.0.1 REDIS_PORT="$REDIS_PORT"
                DB_HOST=127.0.0.1 DB_PORT="$PG_PORT" DB_USER=postgres DB_PASSWORD= DB_NAME=chat
                DB_SPILL_DIR="$RUN_DIR/spill"
                SERVER_TRUSTED_PROXIES=127.0.0.1 ${CLUSTER_POD_ENV:-})
  local i upstreams=""
  for i in $(seq 1 "$PODS"); do
    local port=$((POD_BASE + i))
    start_bg "pod-$i" env "${common[@]}" NATS_USER=chat-pod NATS_PASSWORD="$(secret CHAT_NATS_POD_PASSWORD)" \
      POD_ID="pod-$i" SERVER_HOST=127.0.0.1 SERVER_PORT="$port" "$BUILD/chatd"
    upstreams+="    server 127.0.0.1:$port;"$'\n'
  done
  for i in $(seq 1 "$WORKERS"); do
    start_bg "worker-$i" env "${common[@]}" NATS_USER=chat-worker \
      NATS_PASSWORD="$(secret CHAT_NATS_WORKER_PASSWORD)" "$BUILD/chat-worker"
  done
  for i in $(seq 1 "$PODS"); do wait_for "pod-$i" http_ok "http://127.0.0.1:$((POD_BASE + i))/ready"; done

  local conf="$RUN_DIR/nginx.conf"
  python3 - "$ROOT/deploy/nginx.conf" "$conf" "$RUN_DIR" "$HTTP_PORT" "$upstreams" "${CLUSTER_NGINX_WORKERS:-1}" <<'PY'
import sys
src, dst, run_dir, port, upstreams, workers = sys.argv[1:7]
text = open(src).read().replace("@RUN_DIR@", run_dir).replace("@HTTP_PORT@", port).replace("@UPSTREAMS@", upstreams.rstrip("\n"))
if int(workers) > 1:
    for old, new in (("worker_processes 1;", "worker_processes %s;\nworker_rlimit_nofile 20000;" % int(workers)),
                     ("worker_connections 16384;", "worker_connections 19000;"),
                     ("listen 127.0.0.1:%s;" % port, "listen 127.0.0.1:%s reuseport backlog=4096;" % port)):
        if text.count(old) != 1:
            sys.exit("deploy/nginx.conf changed: cannot find %r for CLUSTER_NGINX_WORKERS" % old)
        text = text.replace(old, new)
open(dst, "w").write(text)
PY
  step nginx-check nginx -t -c "$conf" -p "$RUN_DIR"
  log "starting nginx"
  nginx -c "$conf" -p "$RUN_DIR" 2>>"$RUN_DIR/logs/nginx-error.log" ||
    fail_up "nginx did not start" "$RUN_DIR/logs/nginx-error.log"
  wait_for nginx http_ok "http://127.0.0.1:$HTTP_PORT/health"
  trap - ERR
  log "up: http://127.0.0.1:$HTTP_PORT (pods on $((POD_BASE + 1))..$((POD_BASE + PODS)), run dir $RUN_DIR)"
}

# SIGTERM to each piece at once, then waits (up to 20 s, saying so every 2 s)
# until all have exited; what is left is killed.
stop_pieces() {  # names...
  local name pid waiting=() left i
  for name in "$@"; do
    [ -f "$RUN_DIR/$name.pid" ] || continue
    pid=$(cat "$RUN_DIR/$name.pid")
    if running "$pid"; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      waiting+=("$name")
    fi
  done
  for i in $(seq 1 200); do
    left=()
    for name in "${waiting[@]}"; do alive "$name" && left+=("$name"); done
    waiting=("${left[@]}")
    [ ${#waiting[@]} -eq 0 ] && break
    if [ $((i % 20)) -eq 0 ]; then log "waiting for ${waiting[*]} to exit ($((i / 10)) s)"; fi
    sleep 0.1
  done
  for name in "${waiting[@]}"; do
    log "$name did not stop in 20 s: killing"
    kill -KILL "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null || true
  done
  for name in "$@"; do rm -f "$RUN_DIR/$name.pid"; done
}

down() {
  [ -d "$RUN_DIR" ] || { log "nothing to stop in $RUN_DIR"; return 0; }
  if alive nginx; then
    log "stopping nginx"
    nginx -c "$RUN_DIR/nginx.conf" -p "$RUN_DIR" -s quit 2>/dev/null || true
    for _ in $(seq 1 50); do alive nginx || break; sleep 0.1; done
  fi
  stop_pieces nginx
  local f pieces=()
  for f in "$RUN_DIR"/pod-*.pid "$RUN_DIR"/worker-*.pid; do
    [ -e "$f" ] && pieces+=("$(basename "$f" .pid)")
  done
  # Pods finish their running replies first (up to SERVER_SHUTDOWN_TIMEOUT), all at once.
  stop_pieces "${pieces[@]}"
  if [ -f "$RUN_DIR/postgres.started" ]; then
    log "stopping postgres"
    as_postgres "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" -m fast -w stop >/dev/null 2>&1 || true
    rm -f "$RUN_DIR/postgres.started"
  fi
  stop_pieces redis nats nats-2 nats-3
  rm -f "$RUN_DIR/cluster.env"
  log "down"
}

status() {
  local f name
  for f in "$RUN_DIR"/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid)
    if alive "$name"; then echo "$name running (pid $(cat "$f"))"; else echo "$name stopped"; fi
  done
  [ -f "$RUN_DIR/postgres.started" ] && as_postgres "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg" status >/dev/null 2>&1 &&
    echo "postgres running (port $PG_PORT)"
  local i
  for i in $(seq 1 "$PODS"); do
    echo "pod-$i health: $(curl -fsS --max-time 2 "http://127.0.0.1:$((POD_BASE + i))/health" 2>/dev/null || echo unreachable)"
  done
}

logs() {
  if [ $# -gt 0 ]; then tail -n 100 "$RUN_DIR/logs/$1.log"; return; fi
  local f
  for f in "$RUN_DIR"/logs/*.log; do echo "== $f"; tail -n 20 "$f"; done
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  logs) logs "$@" ;;
  *) echo "usage: $0 up|down|status|logs [name]" >&2; exit 2 ;;
esac
