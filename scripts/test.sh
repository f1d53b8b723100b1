#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs libtorch, prepares real CIFAR-10 when a
# local copy is available (../shared/data), checks that the coordinator does not link
# libtorch, installs Debian's chromium and chromium-driver for the dashboard's browser test
# and Debian's prometheus for the metrics test,
# runs every test in the workspace, the Python protocol check (scripts/check-python-client.sh)
# and the PyTorch check of an exported model (scripts/check-pytorch-export.sh), then checks deploy/ (scripts/check-deploy.sh:
# release build, rendered manifests against the Kubernetes schemas, checkov, flag lint) and
# runs each cargo-fuzz target for FUZZ_SECONDS (default 60; scripts/fuzz.sh).
# Where a Docker engine answers, it first builds the images and runs the cluster of containers
# under faults (scripts/check-containers.sh) and the lab install under real systemd
# (scripts/check-systemd.sh); check-deploy.sh then checks the images' own binaries instead of
# building them again. Without Docker it says that it skipped them.
# SKIP_DEPLOY_CHECK=1 or SKIP_FUZZ=1 leaves those steps out.
set -euo pipefail
cd "$(dirname "$0")/.."

# Disk, measured on a fresh clone (du after a .ci/run): torch with its CUDA libraries 4.7 GB
# (more while pip installs it), the debug build 2.2 GB, the release build 1.7 GB, the fuzzing
# build 1.6 GB while it kept full debug info (line tables only now). Peak over the clone
# (.ci/run, used space sampled every 5 s, one run each): 8.8 GB as .ci/run runs it now, 11.0 GB
# before TEST_DROP_DEBUG_BUILD=1 and the fuzzing build's line tables. With Docker (the images,
# their build stages until CHECK_CONTAINERS_PRUNE=1 drops them): 10.7 GB over the start, on the
# same disk as Docker's storage (.ci/run with Docker, sampled every 30 s, 2026-12-05).
free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "${free_gb:-0}" -lt 13 ]; then
    echo "test: warning: only ${free_gb} GB free on $(df -P . | awk 'NR == 2 { print $6 }'); a run from a fresh clone needs about 9 GB, 11 GB where Docker builds the images (more without TEST_DROP_DEBUG_BUILD=1)" >&2
fi

scripts/setup-libtorch.sh

if [ -f "${SHARED_DATA:-../shared/data}/cifar10-jpeg.tar.xz" ]; then
    scripts/prepare-data.sh data
    export CIFAR10_DATA="$PWD/data" REQUIRE_REAL_DATA=1
elif [ -z "${CIFAR10_DATA:-}" ]; then
    echo "test: no real CIFAR-10 here; tests that need it will say they were skipped"
fi

# The dashboard's browser test drives Debian's chromium through chromedriver
# (tests/tests/dashboard.rs); once they are here, it must run, not skip.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    echo "test: installing chromium and chromium-driver for the dashboard's browser test"
    { apt-get install -y -qq chromium chromium-driver \
        || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }; } >/dev/null 2>&1 \
        || echo "test: could not install chromium (needs root and the Debian registry); the browser test will say it was skipped"
fi
if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then
    export REQUIRE_BROWSER=1
fi

# The metrics test (tests/tests/metrics.rs) has Debian's prometheus scrape a coordinator and a
# worker; once it is here, it must run, not skip. (--no-install-recommends: the server alone,
# about 10 s to install; the package starts no service without systemd.)
if ! command -v prometheus >/dev/null; then
    echo "test: installing prometheus for the metrics test"
    { apt-get install -y -qq --no-install-recommends prometheus \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }; } >/dev/null 2>&1 \
        || echo "test: could not install prometheus (needs root and the Debian registry); the metrics test will say it was skipped"
fi
if command -v prometheus >/dev/null; then
    export REQUIRE_PROMETHEUS=1
fi

# The coordinator must build and run on machines without libtorch.
if cargo tree -p coordinator -e normal,build --prefix none | grep -Eq '^(tch|torch-sys) '; then
    echo "test: the coordinator depends on libtorch (tch/torch-sys)" >&2
    exit 1
fi

cargo test --workspace "$@"

# A worker written in Python from the .proto alone, against a real coordinator.
scripts/check-python-client.sh

# An exported model loaded into the same architecture in PyTorch scores what the worker said.
scripts/check-pytorch-export.sh

# Nothing below uses the debug build. TEST_DROP_DEBUG_BUILD=1 (set by .ci/run) removes it so the
# release and fuzzing builds do not sit beside it on a small disk.
if [ -n "${TEST_DROP_DEBUG_BUILD:-}" ]; then
    echo "test: removing target/debug before the release and fuzzing builds (TEST_DROP_DEBUG_BUILD)"
    rm -rf target/debug
fi

if [ -z "${SKIP_DEPLOY_CHECK:-}" ]; then
    if docker info >/dev/null 2>&1 && [ -n "${CIFAR10_DATA:-}" ]; then
        scripts/check-containers.sh
        scripts/check-systemd.sh
        # The release binaries the images were built with (built once, in the images).
        export DEPLOY_BIN_DIR=out/containers/bin
    elif ! docker info >/dev/null 2>&1; then
        echo "test: no Docker engine answers: SKIPPED the images, the container cluster and the systemd checks (scripts/check-containers.sh, scripts/check-systemd.sh)"
    else
        echo "test: no real CIFAR-10: SKIPPED the container cluster and the systemd checks (they train)"
    fi
    scripts/check-deploy.sh
fi

if [ -z "${SKIP_FUZZ:-}" ]; then
    scripts/fuzz.sh
fi
