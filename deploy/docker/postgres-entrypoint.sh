#!/bin/bash
# PostgreSQL 15 for docker-compose.yml: on an empty data volume, initdb (password
# authentication over TCP) and CREATE DATABASE; then run the server in the
# foreground. POSTGRES_PASSWORD is required, POSTGRES_DB defaults to chat.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
db=${POSTGRES_DB:-chat}
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
: "${PGDATA:=/var/lib/postgresql/data}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres-entrypoint: initializing $PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  "$bin/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  "$bin/psql" -v ON_ERROR_STOP=1 -q -U postgres -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null
  "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres-entrypoint: database $db created"
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'
