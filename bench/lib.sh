# Shared by bench/run.sh and bench/compare.sh (sourced): logging, free ports, waiting for a quiet
# machine, running loadgen and collecting what it found wrong. The caller sets root, bench_name,
# tmp, loadgen and chatd_cmd; the array `errors` collects the problems reported in the JSON line.

log() { echo "$bench_name: $*" >&2; }

secs() { printf '%.0f' "$1"; }  # whole seconds, for time limits

free_port() {  # below the ephemeral range, where loadgen's own connections never land
  /usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import harness; print(harness.free_port())' \
    "$root/tests/e2e"
}

errors=()  # problems seen with the server, reported in the JSON

busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# wait_quiet: other work on this machine skews every figure (2 shared cores). Waits up to
# QUIET_WAIT seconds (120) for a second in which the machine is at most QUIET_MAX percent
# of one core busy (25), and says so when it never is.
wait_quiet() {
  local deadline=$((SECONDS + ${QUIET_WAIT:-120})) hz a b pct
  hz=$(getconf CLK_TCK)
  while :; do
    a=$(busy_ticks)
    sleep 1
    b=$(busy_ticks)
    pct=$(((b - a) * 100 / hz))
    if ((pct <= ${QUIET_MAX:-25})); then return 0; fi
    if ((SECONDS >= deadline)); then
      log "machine still busy (${pct}% of a core used by other work); measuring anyway"
      errors+=("machine busy with other work (${pct}% of a core) at the start of a scenario")
      return 0
    fi
    log "machine busy (${pct}% of a core used by other work); waiting"
    sleep 4
  done
}

# run_loadgen NAME TIMEOUT ARGS...: stores loadgen's JSON line in $tmp/NAME.json.
run_loadgen() {
  local name=$1 limit=$2
  shift 2
  log "loadgen $*"
  local rc=0
  timeout --signal=KILL "$limit" "$loadgen" "$@" >"$tmp/$name.json" || rc=$?
  if [ $rc -ne 0 ] || ! jq -e . "$tmp/$name.json" >/dev/null 2>&1; then
    log "loadgen ($name) failed with status $rc"
    errors+=("$name: loadgen failed with status $rc")
    echo '{}' >"$tmp/$name.json"
    return 1
  fi
  jq -c 'del(.problems)' "$tmp/$name.json" >&2
  if [ "$(jq '.problems | length' "$tmp/$name.json")" != 0 ]; then
    log "loadgen ($name) saw problems:"
    jq -r '.problems[]' "$tmp/$name.json" | head -n 12 >&2
  fi
  # What loadgen counted as wrong (order, stalls, events, empty or negative latencies) is an
  # error of the run, not just a figure in the scenario's details.
  local e
  while IFS= read -r e; do
    log "error: $e"
    errors+=("$e")
  done < <(python3 "$root/bench/loadgen_check.py" "$name" "$tmp/$name.json")
}

# start_chatd NAME [VAR=value ...]: starts the server, waits for /health (30 s at most).
start_chatd() {
  local name=$1
  shift
  wait_quiet
  port=$(free_port)
  logfile=$tmp/chatd-$name.log
  # A benchmark is one address and one user at full speed: no admission limits.
  env SERVER_HOST=127.0.0.1 SERVER_PORT="$port" DB_PATH="$tmp/chat-$name.db" LOG_LEVEL=warn \
    RATE_LIMIT_CHAT_PER_MINUTE=0 RATE_LIMIT_RUNNING_REPLIES=0 RATE_LIMIT_IP_PER_MINUTE=0 \
    RATE_LIMIT_STREAMS_PER_USER=0 SERVER_MAX_CONNECTIONS_PER_IP=0 "$@" \
    "${chatd_cmd[@]}" >"$logfile" 2>&1 &
  pid=$!
  wait_healthy "$name" "chatd" "$*"
}

# wait_healthy NAME WHAT DETAILS: waits (30 s at most) for http://127.0.0.1:$port/health while
# the server $pid lives; stops it when it never answers.
wait_healthy() {
  local name=$1 what=$2 details=$3
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$what ($name) exited at start; log tail:"
      tail -n 20 "$logfile" >&2
      errors+=("$name: $what exited at start")
      pid=""
      return 1
    fi
    if curl -sf --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      log "$what ($name) pid $pid healthy on port $port ($details)"
      return 0
    fi
    sleep 0.2
  done
  log "$what ($name) not healthy within 30 s"
  errors+=("$name: /health not answering within 30 s")
  stop_server "$name"
  return 1
}

# stop_server NAME: SIGTERM, 10 s grace, then SIGKILL. Notes a crash during the run.
stop_server() {
  local name=$1
  [ -n "$pid" ] || return 0
  if ! kill -0 "$pid" 2>/dev/null; then
    local rc=0
    wait "$pid" || rc=$?
    log "server ($name) had exited during the scenario (status $rc); log tail:"
    tail -n 20 "$logfile" >&2
    errors+=("$name: server exited during the scenario (status $rc)")
    pid=""
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "server ($name) ignored SIGTERM for 10 s; killing"
    errors+=("$name: server did not stop within 10 s of SIGTERM")
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  if [ -s "$logfile" ]; then
    log "server ($name) log: $(grep -ciE 'error|warn' "$logfile" || true) warn/error lines; last ones:"
    grep -iE 'error|warn' "$logfile" | tail -n 5 >&2 || true
  fi
  pid=""
}

health() { curl -s --max-time 2 "http://127.0.0.1:$port/health" || echo '{}'; }


# report_facts: sets errs (the errors as a JSON array), cpu_model and mem_kib for the JSON line.
report_facts() {
  errs=$(printf '%s\n' "${errors[@]+"${errors[@]}"}" | jq -R . | jq -sc 'map(select(length > 0))')
  cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
}
