#!/usr/bin/env bash
# chatd against nginx + nchan on this machine, in one run: ONE JSON line on stdout with both
# sides and the ratios (logs on stderr). docs/BENCHMARKS.md records runs.
#
#   bench/compare.sh                 # builds chatd + loadgen in ./build, runs every scenario
#
# Each scenario runs against a fresh server, chatd and then nchan, with the same loadgen
# command apart from the addresses:
#   hold_1k, hold_10k  1,000 / 10,000 idle SSE streams (one session each): the server's memory
#                      growth per stream, RSS and PSS summed over its processes (chatd; nginx's
#                      master and workers: PSS counts nchan's shared memory zone once)
#   fanout_full        SESSIONS (1000) streams, one per session, chunks published as fast as the
#                      server delivers them (each session keeps WINDOW (4) chunks in flight)
#   fanout_10k         the same at RATE (10000) chunks/s in all: latency from the chunk's
#                      timestamp (taken right before the publish) to its receipt; for chatd
#                      also its own count (chat_chunk_delivery_seconds, warm-up included): the
#                      share of chunks on the socket within 1, 2 and 5 ms of their timestamp
# In the fan-out scenarios chatd is fed through a real nats-server (core NATS, started here) on
# chat.pod.{pod}.response, as chat-worker feeds it; nchan through HTTP POST /pub/{session}.
# chatd's publisher keeps nats.c's default (a flusher writes about a millisecond's publishes
# together, as chat-worker does); PUBLISHER_SEND_ASAP=1 makes it write each chunk at once, as
# nchan's publisher writes each POST (NATS_SEND_ASAP on chat-worker).
# Every chunk is the same ~230-byte ResponseChunk JSON on both sides; loadgen checks that each
# session's chunks arrive once and in order, and anything lost, duplicated or out of order is an
# error of the run. Both servers get the machine's cores: chatd one thread per core, nginx one
# worker per core (bench/nchan.conf).
#
# Environment: BUILD_DIR (./build), NO_BUILD=1, SCENARIOS ("hold_1k hold_10k fanout_full
# fanout_10k"), SESSIONS (1000), RATE (10000), WINDOW (4), RUN_SECONDS (10), WARMUP (3),
# PUBLISHER_SEND_ASAP (0),
# HOLD_SECONDS (10), KEEP=1 keeps the temp dir, QUIET_WAIT/QUIET_MAX (bench/lib.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
bench_name=compare.sh
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

for tool in nginx nats-server jq curl; do
  command -v "$tool" >/dev/null || { log "needs $tool (apt-get install nginx libnginx-mod-nchan nats-server jq curl)"; exit 1; }
done
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || { log "needs nchan: apt-get install libnginx-mod-nchan"; exit 1; }

if [ -z "${NO_BUILD:-}" ]; then
  log "building chatd and loadgen in $build"
  cmake --build "$build" --target chatd loadgen >&2
fi
chatd_cmd=("$build/chatd")
loadgen=$build/loadgen
[ -x "$loadgen" ] || { log "no loadgen at $loadgen"; exit 1; }

scenarios=${SCENARIOS:-hold_1k hold_10k fanout_full fanout_10k}
sessions=${SESSIONS:-1000}
rate=${RATE:-10000}
window=${WINDOW:-4}
send_asap=${PUBLISHER_SEND_ASAP:-0}
[ "$send_asap" = 0 ] || [ "$send_asap" = 1 ] || { log "PUBLISHER_SEND_ASAP takes 0 or 1"; exit 1; }
run_s=${RUN_SECONDS:-10}
warmup=${WARMUP:-3}
hold_s=${HOLD_SECONDS:-10}
workers=$(nproc)

tmp=$(mktemp -d /tmp/chatd-compare.XXXXXX)
pid=""
nats_pid=""
cleanup() {
  for p in "$pid" "$nats_pid"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  if [ -z "${KEEP:-}" ]; then rm -rf "$tmp"; else log "kept $tmp"; fi
}
trap cleanup EXIT

# start_nchan NAME: nginx with bench/nchan.conf on a free port, its master as $pid.
start_nchan() {
  local name=$1 dir=$tmp/nginx-$1
  wait_quiet
  port=$(free_port)
  mkdir -p "$dir"
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" -e "s#@WORKERS@#$workers#g" "$root/bench/nchan.conf" >"$dir/nginx.conf"
  logfile=$dir/error.log
  nginx -e "$logfile" -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  pid=$!
  wait_healthy "$name" nginx "nchan, $workers workers"
}

# The processes whose memory and CPU count: chatd, or nginx's master and its workers.
server_pids() {
  local children
  children=$(pgrep -d, -P "$pid" || true)
  echo "$pid${children:+,$children}"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_nats() {
  [ -n "$nats_pid" ] && return 0
  nats_port=$(free_port)
  nats-server -a 127.0.0.1 -p "$nats_port" >"$tmp/nats.log" 2>&1 &
  nats_pid=$!
  local deadline=$((SECONDS + 10))
  until port_open "$nats_port" || ! kill -0 "$nats_pid" 2>/dev/null || ((SECONDS >= deadline)); do
    sleep 0.1
  done
  port_open "$nats_port" || { log "nats-server did not start"; tail "$tmp/nats.log" >&2; exit 1; }
  log "nats-server pid $nats_pid on port $nats_port"
}

hold() {  # hold SIDE SCENARIO N
  local side=$1 s=$2 n=$3 extra=()
  [ "$side" = nchan ] && extra=(--sse-path '/sub/{session}' --ready headers)
  sleep 1  # start-up allocations settle before the baseline
  run_loadgen "${side}_$s" $((hold_s + 240)) hold --port "$port" --connections "$n" --hold-seconds "$hold_s" \
    --settle 3 --pid "$(server_pids)" "${extra[@]}" || true
}

# chatd's own count of its chunks' delivery (chat_chunk_delivery_seconds: from the chunk's
# timestamp to its bytes on the socket): the cumulative buckets at 1, 2 and 5 ms, and all.
delivery_buckets() {
  curl -sf "http://127.0.0.1:$port/metrics" | awk '
    /^chat_chunk_delivery_seconds_bucket\{le="0.001"\}/ { a = $2 }
    /^chat_chunk_delivery_seconds_bucket\{le="0.002"\}/ { b = $2 }
    /^chat_chunk_delivery_seconds_bucket\{le="0.005"\}/ { c = $2 }
    /^chat_chunk_delivery_seconds_count/ { n = $2 }
    END { printf "{\"le_1ms\":%d,\"le_2ms\":%d,\"le_5ms\":%d,\"all\":%d}\n", a, b, c, n }'
}

fanout() {  # fanout SIDE SCENARIO RATE
  local side=$1 s=$2 r=$3 extra=() before='{}'
  [ "$side" = chatd ] && extra=(--nats-port "$nats_port" --pod bench --nats-send-asap "$send_asap" --broker-pid "$nats_pid")
  [ "$side$s" = chatdfanout_10k ] && before=$(delivery_buckets)
  run_loadgen "${side}_$s" $((run_s + warmup + 120)) fanout --target "$side" --port "$port" --sessions "$sessions" \
    --seconds "$run_s" --warmup "$warmup" --rate "$r" --window "$window" --pid "$(server_pids)" "${extra[@]}" || true
  # Chunks that never arrived: did nats-server drop them (a slow consumer) or did chatd warn?
  if [ "$side" = chatd ] && [ "$(jq '.integrity.undelivered_after_drain // 0' "$tmp/${side}_$s.json")" != 0 ]; then
    errors+=("${side}_$s: nats-server slow consumer lines: $(grep -c 'Slow Consumer' "$tmp/nats.log" || true);"\
" chatd warnings: $(grep -oE '"level":"(warning|error)","event":"[^"]*' "$logfile" | cut -d'"' -f8 | sort | uniq -c | tr -s ' \n' ' ')")
  fi
  # Where the tail is: already at chatd's socket write, or only at the client.
  if [ "$side$s" = chatdfanout_10k ]; then
    jq -nc --argjson a "$before" --argjson b "$(delivery_buckets)" \
      '($b.all - $a.all) as $n | if $n > 0 then {chunks: $n} + ($b | del(.all) | with_entries(
         .key as $k | .value = ((($b[$k] - $a[$k]) / $n * 10000 | round) / 10000))) else {} end' \
      >"$tmp/chatd_${s}_own.json" || echo '{}' >"$tmp/chatd_${s}_own.json"
  fi
}

for side in chatd nchan; do
  for s in hold_1k hold_10k fanout_full fanout_10k; do echo '{}' >"$tmp/${side}_$s.json"; done
done
echo '{}' >"$tmp/chatd_fanout_10k_own.json"

for s in $scenarios; do
  case $s in
    hold_1k | hold_10k)
      n=$([ "$s" = hold_1k ] && echo 1000 || echo 10000)
      if start_chatd "chatd_$s" SERVER_MAX_CONNECTIONS=19000; then
        hold chatd "$s" "$n"
        stop_server "chatd_$s"
      fi
      if start_nchan "nchan_$s"; then
        hold nchan "$s" "$n"
        stop_server "nchan_$s"
      fi
      ;;
    fanout_full | fanout_10k)
      r=$([ "$s" = fanout_full ] && echo 0 || echo "$rate")
      start_nats
      if start_chatd "chatd_$s" SERVER_MAX_CONNECTIONS=19000 NATS_URL="nats://127.0.0.1:$nats_port" \
        NATS_JETSTREAM=false POD_ID=bench; then
        fanout chatd "$s" "$r"
        stop_server "chatd_$s"
      fi
      if start_nchan "nchan_$s"; then
        fanout nchan "$s" "$r"
        stop_server "nchan_$s"
      fi
      ;;
    *) log "unknown scenario $s"; exit 2 ;;
  esac
done

report_facts
slurp=()
for side in chatd nchan; do
  for s in hold_1k hold_10k fanout_full fanout_10k; do slurp+=(--slurpfile "${side}_$s" "$tmp/${side}_$s.json"); done
done
slurp+=(--slurpfile chatd_own "$tmp/chatd_fanout_10k_own.json")
jq -nc \
  --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --argjson cores "$workers" --arg cpu "$cpu_model" --argjson mem_kib "$mem_kib" --arg kernel "$(uname -r)" \
  --arg commit "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --arg nginx "$(nginx -v 2>&1 | sed 's/^nginx version: //')" \
  --arg nchan "$(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo unknown)" \
  --arg nats "$(nats-server --version 2>&1 | head -1)" \
  --argjson send_asap "$([ "$send_asap" = 1 ] && echo true || echo false)" \
  --argjson errors "$errs" "${slurp[@]}" \
  'def side($h1; $h10; $full; $rate): {
      idle_rss_bytes_per_stream_1k: $h1[0].rss_per_conn_bytes, idle_pss_bytes_per_stream_1k: $h1[0].pss_per_conn_bytes,
      idle_rss_bytes_per_stream_10k: $h10[0].rss_per_conn_bytes, idle_pss_bytes_per_stream_10k: $h10[0].pss_per_conn_bytes,
      connect_10k_p99_ms: $h10[0].connect_p99_ms,
      fanout_events_per_sec: $full[0].chunk_events_per_sec, fanout_server_cpu_percent: $full[0].cpu_percent.server,
      fanout_broker_cpu_percent: $full[0].cpu_percent.broker,
      fanout_delivered: $full[0].integrity.delivered,
      at_rate: {events_per_sec: $rate[0].chunk_events_per_sec, p50_ms: $rate[0].latency_p50_ms,
                p99_ms: $rate[0].latency_p99_ms, p999_ms: $rate[0].latency_p999_ms,
                server_cpu_percent: $rate[0].cpu_percent.server, broker_cpu_percent: $rate[0].cpu_percent.broker,
                machine_cpu_percent: $rate[0].cpu_percent.machine}};
    def ratio($a; $b): if ($a | type) == "number" and ($b | type) == "number" and $b > 0
                       then ($a / $b * 100 | round / 100) else null end;
    side($chatd_hold_1k; $chatd_hold_10k; $chatd_fanout_full; $chatd_fanout_10k) as $c |
    side($nchan_hold_1k; $nchan_hold_10k; $nchan_fanout_full; $nchan_fanout_10k) as $n |
    {date: $date,
     machine: {cores: $cores, cpu: $cpu, mem_mib: ($mem_kib / 1024 | floor), kernel: $kernel},
     commit: $commit, nginx: $nginx, nchan: $nchan, nats_server: $nats, publisher_send_asap: $send_asap,
     chatd: ($c | .at_rate.own_delivery_share = $chatd_own[0]), nginx_nchan: $n,
     ratios: {idle_rss_10k_nchan_over_chatd: ratio($n.idle_rss_bytes_per_stream_10k; $c.idle_rss_bytes_per_stream_10k),
              idle_pss_10k_nchan_over_chatd: ratio($n.idle_pss_bytes_per_stream_10k; $c.idle_pss_bytes_per_stream_10k),
              fanout_chatd_over_nchan: ratio($c.fanout_events_per_sec; $n.fanout_events_per_sec),
              p99_at_rate_chatd_over_nchan: ratio($c.at_rate.p99_ms; $n.at_rate.p99_ms)},
     goals: {idle_rss_bytes_per_stream_max: 1024, idle_ratio_min: 10, fanout_ratio_min: 1.5, p99_at_rate_ms_max: 2},
     errors: $errors,
     scenarios: {chatd: {hold_1k: $chatd_hold_1k[0], hold_10k: $chatd_hold_10k[0], fanout_full: $chatd_fanout_full[0],
                         fanout_10k: $chatd_fanout_10k[0]},
                 nginx_nchan: {hold_1k: $nchan_hold_1k[0], hold_10k: $nchan_hold_10k[0],
                               fanout_full: $nchan_fanout_full[0], fanout_10k: $nchan_fanout_10k[0]}}}'
