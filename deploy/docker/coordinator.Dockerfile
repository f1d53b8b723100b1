# syntax=docker/dockerfile:1
# The coordinator image: no libtorch, a non-root user, a slim base with tar (for `kubectl cp`
# of reports). Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t sweep-coordinator:0.1.0 .
# Base images are build arguments; the defaults are the public images. Where no registry
# answers, deploy/docker/bases.sh makes local stand-ins and prints the --build-arg flags.
# /data (the database) is the only path it writes, so the root filesystem can be read-only.
# checkov:skip=CKV_DOCKER_7:bases are ARGs whose defaults are pinned tags (deploy/lint.py resolves and checks them)
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Line tables are 83 of the binary's 101 MB: the image's copy keeps symbols without them.
RUN cargo build --release --locked -p coordinator \
    && strip --strip-debug -o /usr/local/bin/coordinator target/release/coordinator

FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 sweep \
    && useradd --system --uid 10001 --gid sweep --no-create-home --home-dir /data sweep \
    && mkdir -p /data \
    && chown sweep:sweep /data
COPY --from=build /usr/local/bin/coordinator /usr/local/bin/coordinator
USER 10001:10001
WORKDIR /data
# gRPC for workers and admin commands; the dashboard, /healthz and /readyz over HTTP.
EXPOSE 50051 8080
# Kubernetes probes and systemd supervise health (the image has no HTTP client for a HEALTHCHECK).
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/coordinator"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--db", "/data/sweep.db", "--http-listen", "0.0.0.0:8080", "--token-file", "/etc/sweep/token/token", "--admin-token-file", "/etc/sweep/admin-token/admin-token", "--tls-cert", "/etc/sweep/tls/server.pem", "--tls-key", "/etc/sweep/tls/server-key.pem", "--tls-client-ca", "/etc/sweep/tls/ca.pem"]
