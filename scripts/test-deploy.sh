#!/usr/bin/env bash
# make test-deploy: the container image and the Compose stack, for real.
#
#   1. installs Docker (Debian's docker.io and docker-compose) and debootstrap if missing,
#      starts dockerd if none answers (and stops it again at the end);
#   2. makes the Debian 12 base image offline (scripts/docker-base-image.sh, cached) unless
#      BASE_IMAGE names another one;
#   3. builds the images (docker-compose build: chatd/chat-worker compile from scratch);
#   4. brings docker-compose.yml up on 127.0.0.1:80 and waits until every service is healthy;
#   5. runs tests/deploy/test_compose_stack.py: a chat through port 80 with two devices on
#      different pods, one backend container restarted mid-reply, the reply whole and stored once;
#   6. takes the stack down (volumes too) and prints the time of each step.
#
# Not part of `make test` (the image build compiles everything again). Logs and the summary go
# to DEPLOY_LOG_DIR (default run/deploy). CHATD_HTTP_PORT moves the load balancer off port 80.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_DIR=${DEPLOY_LOG_DIR:-$ROOT/run/deploy}
PROJECT=${DEPLOY_PROJECT:-chatd-deploy-test}
export BASE_IMAGE=${BASE_IMAGE:-chatd-base:bookworm}
export CHATD_IMAGE=${CHATD_IMAGE:-chatd:local}
export CHATD_HTTP_ADDR=127.0.0.1
export CHATD_HTTP_PORT=${CHATD_HTTP_PORT:-80}
# A demo reply of a few seconds, so a container can be restarted in the middle of it.
export WORKER_DEMO_CHUNK_DELAY=${WORKER_DEMO_CHUNK_DELAY:-60ms}
export SERVER_SHUTDOWN_TIMEOUT=${SERVER_SHUTDOWN_TIMEOUT:-15s}
# Debian's docker client first (another one may be earlier on PATH).
export PATH=/usr/bin:/usr/sbin:$PATH
COMPOSE=(docker-compose -p "$PROJECT" -f "$ROOT/docker-compose.yml")

mkdir -p "$LOG_DIR"
SUMMARY=$LOG_DIR/summary.txt
: >"$SUMMARY"
started_dockerd=""
stack_up=""
T0=$(date +%s)

say() { echo "test-deploy: $*" | tee -a "$SUMMARY" >&2; }

# step NAME COMMAND...: runs it with its output in $LOG_DIR/NAME.log and records its time.
step() {
  local name=$1 t rc=0
  shift
  t=$(date +%s)
  say "$name ..."
  "$@" >"$LOG_DIR/$name.log" 2>&1 || rc=$?
  say "$name: $((($(date +%s) - t))) s$([ $rc -eq 0 ] || echo ", FAILED (exit $rc)")"
  if [ $rc -ne 0 ]; then
    tail -n 40 "$LOG_DIR/$name.log" | sed 's/^/    /' >&2
    return $rc
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT
  if [ -n "$stack_up" ]; then
    "${COMPOSE[@]}" ps >"$LOG_DIR/ps.log" 2>&1 || true
    "${COMPOSE[@]}" logs --no-color --timestamps >"$LOG_DIR/compose.log" 2>&1 || true
    step down "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 40 || rc=1
  fi
  if [ -n "$started_dockerd" ]; then
    say "stopping the dockerd this script started (pid $started_dockerd)"
    kill -TERM "$started_dockerd" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.2; done
  fi
  say "total: $(($(date +%s) - T0)) s, $([ $rc -eq 0 ] && echo PASSED || echo "FAILED (exit $rc)")"
  say "logs: $LOG_DIR"
  exit $rc
}
trap cleanup EXIT

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then return 0; fi
  say "no Docker daemon answers: starting dockerd (log $LOG_DIR/dockerd.log)"
  nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 150); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$started_dockerd" 2>/dev/null || break
    sleep 0.2
  done
  tail -n 20 "$LOG_DIR/dockerd.log" >&2
  say "dockerd did not start"
  return 1
}

wait_healthy() {  # every container of the project healthy, within 240 s
  local ids id state bad
  ids=$("${COMPOSE[@]}" ps -q)
  [ "$(echo "$ids" | wc -w)" -eq 9 ] || { echo "expected 9 containers, have: $ids"; return 1; }
  for _ in $(seq 1 240); do
    bad=""
    for id in $ids; do
      state=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
      case "$state" in *" running healthy") ;; *) bad+="$state; " ;; esac
    done
    [ -z "$bad" ] && { echo "all 9 containers healthy"; return 0; }
    sleep 1
  done
  echo "not healthy after 240 s: $bad"
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

say "project $PROJECT, base image $BASE_IMAGE, load balancer 127.0.0.1:$CHATD_HTTP_PORT"
step deps "$ROOT/scripts/install-deps.sh" deploy
ensure_dockerd
say "docker: $(docker version -f 'server {{.Server.Version}}, client {{.Client.Version}}'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
if [ "$BASE_IMAGE" = chatd-base:bookworm ]; then
  step base-image "$ROOT/scripts/docker-base-image.sh" "$BASE_IMAGE"
fi
# Behind a TLS-intercepting proxy the build's npm ci must trust the proxy's CA: the host's extra
# CAs go into the build context for this build (deploy/docker/extra-ca/README.md).
extra_cas=()
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -f "$crt" ] || continue
  cp "$crt" "$ROOT/deploy/docker/extra-ca/host-$(basename "$crt")"
  extra_cas+=("$ROOT/deploy/docker/extra-ca/host-$(basename "$crt")")
done
[ ${#extra_cas[@]} -eq 0 ] || say "build trusts the host's extra CAs: ${extra_cas[*]##*/}"
build_rc=0
step build "${COMPOSE[@]}" build || build_rc=$?
[ ${#extra_cas[@]} -eq 0 ] || rm -f "${extra_cas[@]}"
[ $build_rc -eq 0 ] || exit $build_rc
say "image $CHATD_IMAGE: $(docker image inspect -f '{{.Size}}' "$CHATD_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
# A stack of an earlier, interrupted run goes first.
"${COMPOSE[@]}" down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
port_free "$CHATD_HTTP_PORT" || { say "port $CHATD_HTTP_PORT is in use; free it or set CHATD_HTTP_PORT"; exit 1; }
stack_up=1
step up "${COMPOSE[@]}" up -d
step healthy wait_healthy
step test env DEPLOY_PROJECT="$PROJECT" DEPLOY_HTTP_PORT="$CHATD_HTTP_PORT" \
  PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 /usr/bin/python3 -m unittest -v "$ROOT/tests/deploy/test_compose_stack.py"
sed -n 's/^\(test_[a-z_]*\) .* \.\.\. \(ok\|FAIL\|ERROR\)$/    \1: \2/p; /^    [a-z]/p' "$LOG_DIR/test.log" | tee -a "$SUMMARY" >&2 || true
