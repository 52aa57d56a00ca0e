#!/usr/bin/env bash
# Builds bench/registry_bench.cpp against the project's static libraries in BUILD_DIR (./build)
# with the compile flags of src/registry (no CMake change, no rebuild of the tree), then runs it
# against a fresh redis-server on a free 127.0.0.1 port for several member counts and prints
# ONE JSON line. Knobs: BUILD_DIR, OUT (binary, default BUILD_DIR/registry_bench), MEMBERS
# ("1 2 10 100"), INFLIGHT ("1 16"), SECONDS_PER_RUN (3), NO_BUILD=1 (binary already there).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
out=${OUT:-$build/registry_bench}
log() { echo "registry_bench.sh: $*" >&2; }

if [ -z "${NO_BUILD:-}" ] || [ ! -x "$out" ]; then
  log "compiling $out"
  nice c++ -std=c++20 -O2 -g -DNDEBUG -Wall -Wextra -Werror \
    -DBOOST_ASIO_NO_DEPRECATED -DBOOST_CONTAINER_DYN_LINK -DBOOST_CONTAINER_NO_LIB -DBOOST_JSON_DYN_LINK \
    -DBOOST_JSON_NO_LIB -DBOOST_URL_DYN_LINK -DBOOST_URL_NO_LIB -DSPDLOG_SHARED_LIB -DSPDLOG_COMPILED_LIB \
    -DSPDLOG_FMT_EXTERNAL -I"$root/src" -isystem /usr/include/hiredis \
    -o "$out" "$root/bench/registry_bench.cpp" \
    "$build/src/registry/libchat_registry_redis.a" "$build/src/common/libchat_common.a" \
    "$build/src/log/libchat_log.a" -lboost_json -lboost_container -lboost_url -lspdlog -lfmt -lhiredis -pthread
fi

tmp=$(mktemp -d /tmp/chatd-regbench.XXXXXX)
rpid=""
cleanup() {
  if [ -n "$rpid" ] && kill -0 "$rpid" 2>/dev/null; then kill -TERM "$rpid"; sleep 0.3; kill -KILL "$rpid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
rpid=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" ping >/dev/null

load=$(cut -d' ' -f1-3 /proc/loadavg)
results=()
for m in ${MEMBERS:-1 2 10 100}; do
  for c in ${INFLIGHT:-1 16}; do
    redis-cli -p "$port" config resetstat >/dev/null
    r0=$(awk '{print $14 + $15}' /proc/$rpid/stat)
    line=$(timeout --signal=KILL 60 "$out" --port "$port" --members "$m" --pods 2 --seconds "${SECONDS_PER_RUN:-3}" --inflight "$c" | grep "^{" | tail -n 1)
    r1=$(awk '{print $14 + $15}' /proc/$rpid/stat)
    stats=$(redis-cli -p "$port" info commandstats | tr -d '\r' | grep -E 'cmdstat_(smembers|mget):' | sed 's/^cmdstat_//' | tr '\n' ' ')
    hz=$(getconf CLK_TCK)
    line=$(jq -c --arg stats "$stats" --argjson rcpu "$(( (r1 - r0) * 1000 / hz ))" \
      '. + {redis_cpu_ms_total: $rcpu, redis_commandstats: $stats}' <<<"$line")
    log "$line"
    results+=("$line")
  done
done
printf '%s\n' "${results[@]}" | jq -sc --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg load "$load" \
  --arg redis "$(redis-server --version | cut -d' ' -f3)" \
  '{date: $date, loadavg_at_start: $load, redis: $redis, runs: .}'
