# syntax=docker/dockerfile:1
# The worker image: the worker binary compiled against the PyPI torch==2.11.0 wheel (the
# libtorch tch 0.24.0 is built for), and that wheel's libraries at the same path, where the
# binary's rpath points. Runs on CPU, and on NVIDIA GPUs through the container toolkit.
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t sweep-worker:0.1.0 .

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv=3.11.* libjpeg62-turbo-dev=1:2.1.* \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torch \
    && /opt/torch/bin/pip install --no-cache-dir torch==2.11.0
ENV LIBTORCH=/opt/torch/lib/python3.11/site-packages/torch
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p worker \
    && cp target/release/worker /usr/local/bin/worker

FROM nvidia/cuda:13.0.0-base-ubuntu24.04
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sweep \
    && useradd --system --uid 10001 --gid sweep --no-create-home --home-dir /work sweep \
    && mkdir -p /work \
    && chown sweep:sweep /work
# libtorch and the CUDA libraries it loads through its own $ORIGIN rpaths (cuDNN, cuBLAS, NCCL).
COPY --from=build /opt/torch/lib/python3.11/site-packages/torch/lib /opt/torch/lib/python3.11/site-packages/torch/lib
COPY --from=build /opt/torch/lib/python3.11/site-packages/nvidia /opt/torch/lib/python3.11/site-packages/nvidia
COPY --from=build /usr/local/bin/worker /usr/local/bin/worker
USER 10001:10001
# The dataset is fetched into (or mounted at) /work/data.
WORKDIR /work
ENV HOME=/work
EXPOSE 8081
# Kubernetes probes and systemd supervise health (the image has no HTTP client for a HEALTHCHECK).
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/worker"]
