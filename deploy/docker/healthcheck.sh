#!/bin/bash
# Container health checks that need nothing but bash (no curl in the images):
#
#   chatd-healthcheck http PORT PATH   exit 0 when GET http://127.0.0.1:PORT/PATH answers 200
#   chatd-healthcheck process NAME     exit 0 when a process NAME runs (not a zombie, not stopped)
#
# The images use `http` for chatd (/ready), chat-worker (/health on its
# WORKER_HTTP_PORT), NATS (/healthz) and nginx (/health); `process` is for a
# chat-worker run without WORKER_HTTP_PORT, which serves no HTTP port.
set -u

http_ok() {  # port, path
  exec 3<>"/dev/tcp/127.0.0.1/$1" || { echo "cannot connect to port $1"; return 1; }
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
  local status
  IFS= read -r -t 3 status <&3 || { echo "no answer on port $1"; return 1; }
  exec 3<&-
  status=${status%$'\r'}
  case "$status" in
    "HTTP/1."?" 200 "*) return 0 ;;
    *) echo "GET $2: $status"; return 1 ;;
  esac
}

process_ok() {  # name
  local dir comm state
  for dir in /proc/[0-9]*; do
    IFS= read -r comm <"$dir/comm" 2>/dev/null || continue
    [ "$comm" = "$1" ] || continue
    while IFS=$' \t' read -r key state _; do
      [ "$key" = "State:" ] && break
    done <"$dir/status"
    case "$state" in Z | T | X) continue ;; esac
    return 0
  done
  echo "no running process $1"
  return 1
}

case "${1:-}" in
  http) [ $# -eq 3 ] && http_ok "$2" "$3" ;;
  process) [ $# -eq 2 ] && process_ok "$2" ;;
  *) echo "usage: $0 http PORT PATH | process NAME" >&2; exit 2 ;;
esac
