#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ for a while and prints one JSON line per
# target (runs, exec/s, edge coverage at the start and the end, corpus, findings):
# the long runs recorded in docs/FUZZING.md.
#
#   scripts/fuzz-campaign.sh [seconds per target, 600] [targets at once, 2]
#
# FUZZ_BUILD (default build-fuzz, made by `make fuzz`) holds the binaries; each
# target's corpus grows in $FUZZ_BUILD/corpus/<target> (the seeds of
# fuzz/corpus/<target> are read too), crashes land in $FUZZ_BUILD/artifacts/<target>,
# and the full libFuzzer output in $FUZZ_BUILD/campaign/<target>.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FUZZ_BUILD:-$ROOT/build-fuzz}
SECONDS_EACH=${1:-600}
PARALLEL=${2:-2}
TARGETS=(chat_request query_string last_event_id http_framing workflow_request response_chunk
         cancel_request replay_request event_stream openai_events anthropic_events config_values)

[ -x "$BUILD/fuzz/fuzz_chat_request" ] || { echo "fuzz-campaign: no fuzz build in $BUILD (make fuzz)" >&2; exit 2; }
mkdir -p "$BUILD/campaign"

run_one() {  # target
  local t=$1
  mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$BUILD/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t/" \
    "$BUILD/corpus/$t" "$ROOT/fuzz/corpus/$t" >"$BUILD/campaign/$t.log" 2>&1 || true
  summarize "$t"
}

# One JSON line from a target's log: libFuzzer's INITED line (coverage after the
# corpus was read), its last status line, and its final stats.
summarize() {  # target
  local t=$1 log="$BUILD/campaign/$1.log"
  local init last runs eps secs findings
  init=$(grep -m1 -o 'INITED cov: [0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o '[0-9]* second' | grep -o '[0-9]*' || echo "")
  findings=$(ls "$BUILD/artifacts/$t" 2>/dev/null | wc -l)
  printf '{"target":"%s","seconds":%s,"runs":%s,"exec_per_s":%s,"cov_start":%s,"cov_end":%s,"features":%s,"corpus":"%s","findings":%s}\n' \
    "$t" "${secs:-null}" "${runs:-null}" "${eps:-null}" "$init" \
    "$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo null)" \
    "$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo null)" \
    "$(echo "$last" | grep -o 'corp: [^ ]*' | sed 's/corp: //')" "$findings"
}

for t in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 1; done
  run_one "$t" &
done
wait
