#!/usr/bin/env bash
# Benchmarks chatd on this machine and prints ONE JSON line on stdout (logs on stderr).
#
#   bench/run.sh                    # builds chatd + loadgen in ./build, runs all scenarios
#
# Scenarios, each against a fresh chatd on a free port with a temporary DB_PATH:
#   hold     HOLD_CONNECTIONS (10000) idle SSE connections: chatd VmRSS growth per connection
#   storm    (not in the default list) the same connections opened all at once: time from each
#            TCP connect to its `connected` event, p50/p99/max (connect_p99_ms)
#   stream   STREAM_SESSIONS (1000) sessions, one SSE each, WORKER_DEMO_CHUNK_DELAY=0:
#            chunk events/s and chunk latency (chunk timestamp -> client receipt)
#   latency  the same with WORKER_DEMO_CHUNK_DELAY=LAT_DELAY (100ms): ~10k events/s, p50/p99
#   post     POST /api/chat on POST_CONCURRENCY (64) keep-alive connections, new session each
#            time; chatd env POST_ENV (one-chunk demo replies at full speed, see below)
#   post_default  the same against chatd's default worker settings
#
# `errors` in the JSON: problems with the server or the machine, and every count loadgen
# found wrong (bench/loadgen_check.py: order, stalls, events, POST failures, an empty or
# negative latency sample). Figures from a run with errors are not to be quoted.
#
# Environment: BUILD_DIR (./build), NO_BUILD=1 (use existing binaries), CHATD (command
# to run as the server, e.g. "python3 bench/fake_chatd.py"), LOADGEN, SCENARIOS
# ("hold stream latency post post_default"), HOLD_SECONDS (10), STREAM_SECONDS (15), LAT_SECONDS (15),
# POST_SECONDS (10), WARMUP (3), LAT_DELAY (100ms), LAT_STAGGER (3), POST_ENV (env of the post scenario's
# chatd, default "WORKER_DEMO_WORDS_PER_CHUNK=1000 WORKER_DEMO_CHUNK_DELAY=0"), KEEP=1 keeps
# the temp dir, QUIET_WAIT/QUIET_MAX (see wait_quiet).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
bench_name=run.sh
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

if [ -z "${NO_BUILD:-}" ]; then
  log "building chatd and loadgen in $build"
  cmake --build "$build" --target chatd loadgen >&2
fi
read -r -a chatd_cmd <<<"${CHATD:-$build/chatd}"
loadgen=${LOADGEN:-$build/loadgen}
[ -x "$loadgen" ] || { log "no loadgen at $loadgen"; exit 1; }

scenarios=${SCENARIOS:-hold stream latency post post_default}
hold_n=${HOLD_CONNECTIONS:-10000}
hold_s=${HOLD_SECONDS:-10}
stream_n=${STREAM_SESSIONS:-1000}
stream_s=${STREAM_SECONDS:-15}
lat_s=${LAT_SECONDS:-15}
lat_delay=${LAT_DELAY:-100ms}
lat_stagger=${LAT_STAGGER:-3}
post_s=${POST_SECONDS:-10}
post_c=${POST_CONCURRENCY:-64}
warmup=${WARMUP:-3}
read -r -a post_env <<<"${POST_ENV:-WORKER_DEMO_WORDS_PER_CHUNK=1000 WORKER_DEMO_CHUNK_DELAY=0}"

tmp=$(mktemp -d /tmp/chatd-bench.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$tmp"; else log "kept $tmp"; fi
}
trap cleanup EXIT

for s in hold storm stream latency post post_default; do echo '{}' >"$tmp/$s.json"; done

for s in $scenarios; do
  case $s in
    storm)
      if start_chatd storm SERVER_MAX_CONNECTIONS=19000; then
        sleep 1
        run_loadgen storm $(($(secs "$hold_s") + 240)) hold --port "$port" --connections "$hold_n" \
          --batch "$hold_n" --hold-seconds 2 --settle 1 --pid "$pid" || true
        stop_server storm
      fi
      ;;
    hold)
      if start_chatd hold SERVER_MAX_CONNECTIONS=19000; then
        sleep 1  # let start-up allocations settle before the baseline
        run_loadgen hold $(($(secs "$hold_s") + 240)) hold --port "$port" --connections "$hold_n" \
          --hold-seconds "$hold_s" --settle 3 --pid "$pid" || true
        sleep 1
        log "after the hold: /health $(health)"
        stop_server hold
      fi
      ;;
    stream)
      if start_chatd stream WORKER_DEMO_CHUNK_DELAY=0; then
        run_loadgen stream $(($(secs "$stream_s") + $(secs "$warmup") + 120)) stream --port "$port" --sessions "$stream_n" \
          --seconds "$stream_s" --warmup "$warmup" --pid "$pid" || true
        log "after the stream: /health $(health)"
        stop_server stream
      fi
      ;;
    latency)
      if start_chatd latency WORKER_DEMO_CHUNK_DELAY="$lat_delay"; then
        # First chats spread over LAT_STAGGER s (about one reply's length), so that the
        # 1000 replies do not tick, complete and re-post in lockstep.
        run_loadgen latency $(($(secs "$lat_s") + $(secs "$warmup") + $(secs "$lat_stagger") + 120)) stream \
          --port "$port" --sessions "$stream_n" --seconds "$lat_s" --stagger "$lat_stagger" \
          --warmup "$(awk "BEGIN {print $warmup + $lat_stagger}")" --pid "$pid" || true
        log "after the latency run: /health $(health)"
        stop_server latency
      fi
      ;;
    post | post_default)
      # post: the demo worker answers each chat with a one-chunk reply at full speed, so the
      # figure is the chat intake (validate, store, publish, reply, store) without a growing
      # backlog; post_default: chatd's default worker settings (40 ms per 3-word chunk).
      if [ "$s" = post ]; then env_args=("${post_env[@]}"); else env_args=(); fi
      if start_chatd "$s" "${env_args[@]+"${env_args[@]}"}"; then
        run_loadgen "$s" $(($(secs "$post_s") + $(secs "$warmup") + 60)) post --port "$port" --seconds "$post_s" \
          --warmup "$warmup" --concurrency "$post_c" --pid "$pid" || true
        log "after the posts: /health $(health)"
        stop_server "$s"
      fi
      ;;
    *) log "unknown scenario $s"; exit 2 ;;
  esac
done

report_facts
jq -nc \
  --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --argjson cores "$(nproc)" --arg cpu "$cpu_model" --argjson mem_kib "$mem_kib" \
  --arg kernel "$(uname -r)" --arg commit "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --arg server "${chatd_cmd[*]}" \
  --arg built "$(date -u -r "${chatd_cmd[0]}" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)" \
  --argjson errors "$errs" \
  --slurpfile hold "$tmp/hold.json" --slurpfile storm "$tmp/storm.json" --slurpfile stream "$tmp/stream.json" \
  --slurpfile lat "$tmp/latency.json" --slurpfile post "$tmp/post.json" \
  --slurpfile postd "$tmp/post_default.json" \
  '{date: $date,
    machine: {cores: $cores, cpu: $cpu, mem_mib: ($mem_kib / 1024 | floor), kernel: $kernel},
    others_cpu_percent: {stream: $stream[0].cpu_percent.others, latency: $lat[0].cpu_percent.others,
                         post: $post[0].cpu_percent.others},
    commit: $commit, server: $server, server_built: $built,
    idle_connections: $hold[0].connected_at_end,
    idle_rss_per_conn_bytes: $hold[0].rss_per_conn_bytes,
    storm: {connections: $storm[0].connected_at_end, connect_seconds: $storm[0].connect_seconds,
            p50_ms: $storm[0].connect_p50_ms, p99_ms: $storm[0].connect_p99_ms, max_ms: $storm[0].connect_max_ms},
    chunk_events_per_sec: $stream[0].chunk_events_per_sec,
    latency_p50_ms: $stream[0].latency_p50_ms,
    latency_p99_ms: $stream[0].latency_p99_ms,
    latency_at_10k: {rate: $lat[0].chunk_events_per_sec, p50_ms: $lat[0].latency_p50_ms,
                     p99_ms: $lat[0].latency_p99_ms, p999_ms: $lat[0].latency_p999_ms},
    post_rps: $post[0].post_rps,
    post_latency_p99_ms: $post[0].latency_p99_ms,
    post_rps_default_worker: $postd[0].post_rps,
    floors: {idle_rss_per_conn_bytes_max: 4096, chunk_events_per_sec_min: 40000, p99_at_10k_ms_max: 5},
    errors: $errors,
    scenarios: {hold: $hold[0], storm: $storm[0], stream: $stream[0], latency: $lat[0], post: $post[0],
               post_default: $postd[0]}}'
