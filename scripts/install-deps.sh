#!/usr/bin/env bash
# Installs the Debian 12 packages chatd needs to build, test and run, if any is
# missing. Safe to run again: it does nothing when everything is there.
#   scripts/install-deps.sh          build and run (make run)
#   scripts/install-deps.sh --test   and the browser tests' packages (make test)
#   scripts/install-deps.sh deploy   and what `make test-deploy` needs: Docker (docker.io and
#                                    the Compose v1 program docker-compose, Debian 12's own), debootstrap
#   scripts/install-deps.sh fuzz     and clang with libFuzzer's runtime (make fuzz, docs/FUZZING.md)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl python3
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libnats-dev libhiredis-dev libpq-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  nats-server redis-server postgresql nginx libnginx-mod-nchan sqlite3 prometheus openssl
  python3-yaml python3-jsonschema python3-jwt python3-cryptography
)
# The chat page's tests: headless Chromium driven by Selenium (tests/web).
# gdb: a server that does not stop in a test has its threads' stacks printed (harness.dump_stacks);
# iproute2: ss reads a stream socket's kernel buffers back (test_metrics).
test_packages=(chromium chromium-driver python3-selenium gdb iproute2)
for arg in "$@"; do
  case "$arg" in
    --test) packages+=("${test_packages[@]}") ;;
    deploy) packages+=(docker.io docker-compose debootstrap) ;;
    fuzz) packages+=(clang clang-14 libclang-rt-14-dev) ;;
    *) echo "install-deps.sh: unknown argument $arg (--test, deploy, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm build the chat page (web/). Asked for by command, not package:
# a machine may have them from another nodejs package (which then conflicts
# with Debian's npm).
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# The packaged services, if the install started them, must not hold the ports
# the cluster and the tests use: those start their own servers.
for svc in redis-server nginx postgresql prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" || true
    $SUDO systemctl disable "$svc" >/dev/null 2>&1 || true
  elif command -v service >/dev/null; then
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  fi
done
