#!/usr/bin/env bash
# Local stand-ins for the public base images the Dockerfiles default to, for a Docker engine
# that cannot pull (no registry answers). Made from Debian's archive with debootstrap and
# `docker import`, so nothing is pulled:
#
#   sweep-local/debian:bookworm-slim   for debian:bookworm-slim (the coordinator's and the CPU
#                                      worker's runtime stage)
#   sweep-local/cuda:13.0.0-base       for nvidia/cuda:13.0.0-base-ubuntu24.04 (the CUDA worker's
#                                      runtime stage): the same Debian, with the variables the
#                                      NVIDIA container toolkit reads. The worker brings its own
#                                      CUDA libraries (the torch wheel's), so the stand-in needs
#                                      none; only a GPU host can show the driver is found.
#   sweep-local/rust:1.95-bookworm     for rust:1.95-bookworm (the build stages): Debian with gcc,
#                                      g++ and python3, this machine's Rust toolchain (which must
#                                      be 1.95), and this machine's extra CA certificates
#                                      (/usr/local/share/ca-certificates), so that cargo and pip in
#                                      the build stage reach the registries through a proxy that
#                                      re-signs TLS, as here.
#
#   deploy/docker/bases.sh          make the missing ones (about 2 minutes for all three)
#   deploy/docker/bases.sh --force  remake all three
#   deploy/docker/bases.sh --args   print the --build-arg flags that select them
#
# Needs root (debootstrap) and Debian's debootstrap package (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN=sweep-local/debian:bookworm-slim
CUDA=sweep-local/cuda:13.0.0-base
RUST=sweep-local/rust:1.95-bookworm
RUST_VERSION=1.95.0

if [[ ${1:-} == --args ]]; then
    echo "--build-arg RUST_IMAGE=$RUST --build-arg RUNTIME_IMAGE=$DEBIAN --build-arg CUDA_IMAGE=$CUDA"
    exit 0
fi
force=${1:-}
have() { [[ $force != --force ]] && docker image inspect "$1" > /dev/null 2>&1; }
if have "$DEBIAN" && have "$CUDA" && have "$RUST"; then
    echo "bases: $DEBIAN, $CUDA and $RUST are present"
    exit 0
fi
[[ $(id -u) == 0 ]] || { echo "bases: debootstrap needs root" >&2; exit 1; }
if ! command -v debootstrap > /dev/null; then
    echo "bases: installing debootstrap"
    { apt-get install -y -qq debootstrap || { apt-get update -qq && apt-get install -y -qq debootstrap; }; } > /dev/null
fi

work=$(mktemp -d /var/tmp/sweep-bases.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Debian's minbase, without what no container reads (docs, manuals, apt's downloaded lists).
bootstrap() { # DIR [PACKAGES]
    local dir=$1 include=${2:-}
    debootstrap --variant=minbase ${include:+--include=$include} bookworm "$dir" "$MIRROR" > "$dir.log" 2>&1 \
        || { tail -n 20 "$dir.log" >&2; echo "bases: debootstrap failed ($dir.log)" >&2; exit 1; }
    rm -rf "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
        "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
}
import() { # DIR IMAGE [--change ...]
    local dir=$1 image=$2; shift 2
    tar -C "$dir" -c . | docker import "$@" - "$image" > /dev/null
    echo "bases: $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
}

if ! have "$DEBIAN" || ! have "$CUDA"; then
    bootstrap "$work/slim"
    import "$work/slim" "$DEBIAN" --change 'CMD ["bash"]'
    import "$work/slim" "$CUDA" --change 'CMD ["bash"]' \
        --change 'ENV NVIDIA_VISIBLE_DEVICES=all' --change 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility'
    rm -rf "$work/slim"
fi

if ! have "$RUST"; then
    command -v rustc > /dev/null || { echo "bases: no rustc here to copy into $RUST" >&2; exit 1; }
    version=$(rustc --version | awk '{ print $2 }')
    [[ $version == "$RUST_VERSION" ]] || { echo "bases: rustc here is $version; $RUST needs $RUST_VERSION" >&2; exit 1; }
    bootstrap "$work/rust" gcc,g++,libc6-dev,make,pkg-config,ca-certificates,python3,python3-venv,git
    # The toolchain as rustup laid it out, less its documentation (800 MB).
    sysroot=$(rustc --print sysroot)
    mkdir -p "$work/rust/usr/local/rust" "$work/rust/usr/local/cargo/bin"
    cp -a "$sysroot/bin" "$sysroot/lib" "$work/rust/usr/local/rust/"
    [[ -d $sysroot/libexec ]] && cp -a "$sysroot/libexec" "$work/rust/usr/local/rust/"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$work/rust/usr/local/share/ca-certificates/"
        chroot "$work/rust" update-ca-certificates > /dev/null 2>&1
    fi
    import "$work/rust" "$RUST" --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt'
fi
echo "bases: build with $("$here/bases.sh" --args)"
