# syntax=docker/dockerfile:1
# The worker images, from one build stage. Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile --target cpu -t sweep-worker-cpu:0.1.0 .
#   docker build -f deploy/docker/worker.Dockerfile --target cuda -t sweep-worker:0.1.0 .
#
# - `cpu`: runs on any x86-64 machine. It carries libtorch's CPU half only: the PyPI wheel
#   torch==2.11.0 bundles the CUDA libraries (3.6 GB) and this image leaves them out. The worker
#   is linked without libtorch_cuda (SWEEP_WORKER_CUDA=0, worker/build.rs), and the image holds
#   exactly the libraries the loader resolves for it (deploy/docker/runtime-libs.sh).
# - `cuda`: the same worker linked with libtorch_cuda, and the wheel's CUDA libraries (cuDNN,
#   cuBLAS, NCCL) at the paths its $ORIGIN rpaths name. Runs on NVIDIA GPUs through the
#   container toolkit, and on the CPU too.
#
# Base images are build arguments; the defaults are the public images. Where no registry
# answers, deploy/docker/bases.sh makes local stand-ins and prints the --build-arg flags.
# checkov:skip=CKV_DOCKER_7:bases are ARGs whose defaults are pinned tags (deploy/lint.py resolves and checks them)
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv=3.11.* libjpeg62-turbo-dev=1:2.1.* \
    && rm -rf /var/lib/apt/lists/*
# libtorch without its CUDA dependencies (--no-deps), but with the two CUDA runtime libraries
# that libtorch_cpu.so itself links (cudart, and cupti for the profiler): about 1 GB instead of
# 4.7 GB. The CUDA-only libraries are set aside so that nothing links them.
RUN python3 -m venv /opt/torch \
    && /opt/torch/bin/pip install --no-cache-dir --no-deps torch==2.11.0 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 \
    && mkdir /opt/torch-cuda \
    && cd /opt/torch/lib/python3.11/site-packages/torch/lib \
    && mv libtorch_cuda*.so libc10_cuda.so libtorch_nvshmem.so libcaffe2_nvrtc.so /opt/torch-cuda/
ENV LIBTORCH=/opt/torch/lib/python3.11/site-packages/torch
WORKDIR /src
COPY . .
# Line tables are 110 of the binary's 123 MB: the image's copy keeps symbols (function names in
# backtraces) without them.
RUN SWEEP_WORKER_CUDA=0 cargo build --release --locked -p worker \
    && strip --strip-debug -o /usr/local/bin/worker target/release/worker \
    && deploy/docker/runtime-libs.sh /usr/local/bin/worker /opt/runtime

FROM ${RUNTIME_IMAGE} AS cpu
RUN groupadd --system --gid 10001 sweep \
    && useradd --system --uid 10001 --gid sweep --no-create-home --home-dir /work sweep \
    && mkdir -p /work \
    && chown sweep:sweep /work
COPY --from=build /opt/runtime/ /
COPY --from=build /usr/local/bin/worker /usr/local/bin/worker
USER 10001:10001
# The dataset is fetched into (or mounted at) /work/data; /work and /tmp are the only paths the
# worker writes, so the root filesystem can be read-only.
WORKDIR /work
ENV HOME=/work
EXPOSE 8081
# Kubernetes probes and systemd supervise health (the image has no HTTP client for a HEALTHCHECK).
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/worker"]
CMD ["--coordinator", "https://sweep-coordinator:50051", "--token-file", "/etc/sweep/token/token", "--tls-ca", "/etc/sweep/tls/ca.pem", "--tls-cert", "/etc/sweep/tls/worker.pem", "--tls-key", "/etc/sweep/tls/worker-key.pem", "--health-listen", "0.0.0.0:8081", "--device", "cpu"]

FROM build AS build-cuda
RUN mv /opt/torch-cuda/* /opt/torch/lib/python3.11/site-packages/torch/lib/ \
    && /opt/torch/bin/pip install --no-cache-dir torch==2.11.0 \
    && SWEEP_WORKER_CUDA=1 cargo build --release --locked -p worker \
    && strip --strip-debug -o /usr/local/bin/worker target/release/worker \
    && rm -rf /opt/runtime \
    && deploy/docker/runtime-libs.sh /usr/local/bin/worker /opt/runtime

FROM ${CUDA_IMAGE} AS cuda
RUN groupadd --system --gid 10001 sweep \
    && useradd --system --uid 10001 --gid sweep --no-create-home --home-dir /work sweep \
    && mkdir -p /work \
    && chown sweep:sweep /work
COPY --from=build-cuda /opt/runtime/ /
# cuDNN and cuBLAS load parts of themselves at run time (dlopen), which ldd cannot see.
COPY --from=build-cuda /opt/torch/lib/python3.11/site-packages/nvidia /opt/torch/lib/python3.11/site-packages/nvidia
COPY --from=build-cuda /usr/local/bin/worker /usr/local/bin/worker
USER 10001:10001
WORKDIR /work
ENV HOME=/work
EXPOSE 8081
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/worker"]
CMD ["--coordinator", "https://sweep-coordinator:50051", "--token-file", "/etc/sweep/token/token", "--tls-ca", "/etc/sweep/tls/ca.pem", "--tls-cert", "/etc/sweep/tls/worker.pem", "--tls-key", "/etc/sweep/tls/worker-key.pem", "--health-listen", "0.0.0.0:8081", "--device", "cuda"]
