#!/bin/bash
# The load balancer of docker-compose.yml: deploy/nginx.conf (the file
# scripts/cluster.sh uses) filled in for a container, then nginx in the
# foreground. UPSTREAMS: the pods as host:port, separated by spaces.
set -euo pipefail
template=/etc/nginx/chatd.conf.in
run=/var/lib/nginx/chatd
conf=$run/nginx.conf
mkdir -p "$run/logs" "$run/nginx"
ln -sf /dev/stdout "$run/logs/nginx-access.log"
ln -sf /dev/stderr "$run/logs/nginx-error.log"

servers=""
for upstream in ${UPSTREAMS:?UPSTREAMS must name the pods}; do
  servers+="    server $upstream;"$'\n'
done
while IFS= read -r line; do
  if [ "$line" = "@UPSTREAMS@" ]; then
    printf '%s' "$servers"
    continue
  fi
  line=${line//"127.0.0.1:@HTTP_PORT@"/80}  # every interface of the container
  line=${line//@HTTP_PORT@/80}
  line=${line//@RUN_DIR@/$run}
  printf '%s\n' "$line"
done <"$template" >"$conf"
if grep -n '@[A-Z_]*@' "$conf" >&2; then
  echo "nginx-render: placeholders left in $conf" >&2
  exit 1
fi
nginx -t -q -c "$conf" -p "$run"
exec nginx -c "$conf" -p "$run" -g 'daemon off;'
