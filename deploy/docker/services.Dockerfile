# The services around chatd, each from Debian 12's own packages, for
# docker-compose.yml (docs/DEPLOY.md): one target per service.
#
#   docker build -f deploy/docker/services.Dockerfile --target nats .
#
# Any image that offers the same service can replace one (set its `image:` in
# docker-compose.yml); these need nothing but a Debian archive.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS common
COPY deploy/docker/healthcheck.sh /usr/local/bin/chatd-healthcheck

# --- NATS with JetStream; streams on the /data volume; monitoring on 8222 -----
FROM common AS nats
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nats -g nats -m 0750 /data
USER nats
EXPOSE 4222 8222
HEALTHCHECK --interval=3s --timeout=3s --start-period=10s --retries=5 \
  CMD ["chatd-healthcheck", "http", "8222", "/healthz?js-enabled-only=true"]
CMD ["/usr/sbin/nats-server", "--jetstream", "--store_dir", "/data", "--addr", "0.0.0.0", "--port", "4222", \
     "--http_port", "8222"]

# --- Redis: the session registry, nothing to persist ------------------------
FROM common AS redis
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
HEALTHCHECK --interval=3s --timeout=3s --start-period=5s --retries=5 \
  CMD ["sh", "-c", "redis-cli -h 127.0.0.1 ping | grep -q PONG"]
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", \
     "--dir", "/tmp"]

# --- PostgreSQL 15; data on the /var/lib/postgresql/data volume ----------------
FROM common AS postgres
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/no-main-cluster.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY deploy/docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
HEALTHCHECK --interval=3s --timeout=3s --start-period=30s --retries=5 \
  CMD ["sh", "-c", "/usr/lib/postgresql/15/bin/pg_isready -q -h 127.0.0.1 -d \"${POSTGRES_DB:-chat}\" -U postgres"]
STOPSIGNAL SIGINT
CMD ["postgres-entrypoint"]

# --- nginx: the load balancer, deploy/nginx.conf filled in for the compose pods -
FROM common AS nginx
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/nginx.conf /etc/nginx/chatd.conf.in
COPY deploy/docker/nginx-render.sh /usr/local/bin/nginx-render
# UPSTREAMS: the pods, host:port, separated by spaces (docker-compose.yml sets them).
ENV UPSTREAMS="backend-1:8080 backend-2:8080 backend-3:8080"
EXPOSE 80
HEALTHCHECK --interval=3s --timeout=3s --start-period=5s --retries=5 \
  CMD ["chatd-healthcheck", "http", "80", "/health"]
STOPSIGNAL SIGQUIT
CMD ["nginx-render"]
