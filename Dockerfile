# chatd and chat-worker in one image (docs/DEPLOY.md).
#
#   docker build -t chatd:latest .
#   docker build --build-arg BASE_IMAGE=registry.example/debian:bookworm-slim -t chatd:latest .
#
# BASE_IMAGE is any Debian 12 (bookworm) image: the official one by default, a
# mirror's copy, or one made offline by scripts/docker-base-image.sh.
ARG BASE_IMAGE=debian:bookworm-slim

# --- build: compilers and -dev packages, the two programs only (no tests); node
# and npm bundle the chat page (web/) into chatd, its npm packages pinned by
# web/package-lock.json ---------------------------------------------------------
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config nodejs npm ca-certificates \
      libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev \
      libnats-dev libhiredis-dev libpq-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev libspdlog-dev libfmt-dev \
 && rm -rf /var/lib/apt/lists/*
# A TLS-intercepting proxy's CA, if the builder put one in deploy/docker/extra-ca/.
COPY deploy/docker/extra-ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY apps apps
COPY web web
COPY src src
ARG BUILD_JOBS=2
# The programs against a stand-in API document first, so that a change of
# docs/openapi.yaml alone only re-embeds it and relinks (next step).
RUN mkdir -p docs && echo "openapi: 3.1.0" >docs/openapi.yaml \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHAT_WERROR=ON \
      -DCHAT_BUILD_TESTS=OFF -DCHAT_BUILD_BENCH=OFF \
 && cmake --build /build -j "${BUILD_JOBS}" --target chatd chat-worker
COPY docs/openapi.yaml docs/openapi.yaml
RUN touch docs/openapi.yaml \
 && cmake --build /build -j "${BUILD_JOBS}" --target chatd chat-worker \
 && mkdir -p /out \
 && strip --strip-debug -o /out/chatd /build/chatd \
 && strip --strip-debug -o /out/chat-worker /build/chat-worker

# --- runtime: the shared libraries the programs link, CA certificates for the
# HTTPS providers, an unprivileged user; no compiler, no shell tools added ------
FROM ${BASE_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      libnats3.4 libhiredis0.14 libpq5 libsqlite3-0 libssl3 libcurl4 \
      libspdlog1.10 libfmt9 libboost-json1.81.0 libboost-url1.81.0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chatd \
 && useradd --system --uid 10001 --gid chatd --home-dir /var/lib/chatd --shell /usr/sbin/nologin chatd \
 && install -d -o chatd -g chatd -m 0750 /var/lib/chatd /var/lib/chatd/spill
COPY --from=build /usr/local/share/ca-certificates/extra/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
COPY --from=build /out/chatd /out/chat-worker /usr/local/bin/
COPY deploy/docker/healthcheck.sh /usr/local/bin/chatd-healthcheck
USER 10001:10001
WORKDIR /var/lib/chatd
# Embedded default: SQLite under /var/lib/chatd (a volume keeps it). With DB_HOST
# set the spill journal lives in /var/lib/chatd/spill (docs/STORE.md).
ENV DB_PATH=/var/lib/chatd/chat.db \
    DB_SPILL_DIR=/var/lib/chatd/spill \
    LOG_FORMAT=json
VOLUME ["/var/lib/chatd"]
EXPOSE 8080
STOPSIGNAL SIGTERM
# chatd's readiness (/ready: not draining, bus and store reachable). For a
# chat-worker container the orchestrator overrides it (docker-compose.yml).
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["chatd-healthcheck", "http", "8080", "/ready"]
ENTRYPOINT []
CMD ["chatd"]
