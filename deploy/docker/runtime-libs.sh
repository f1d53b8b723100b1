#!/bin/sh
# Copies the shared libraries BINARY loads that a bare Debian or Ubuntu base lacks into DEST,
# each at its own absolute path (DEST/opt/..., DEST/usr/lib/...), so a runtime stage takes them
# with one `COPY --from=build DEST/ /`. What the binary loads is what the dynamic loader
# resolves (ldd), so the set is exactly what this build links: the CPU worker gets libtorch's
# CPU half and the two CUDA runtime libraries libtorch_cpu.so itself needs, and nothing else.
# glibc, libstdc++ and libgcc_s are every base image's own and are not copied. Fails if any
# library is not found.
#   deploy/docker/runtime-libs.sh BINARY DEST
set -eu
binary=$1 dest=$2
missing=$(ldd "$binary" | grep 'not found' || true)
[ -z "$missing" ] || { echo "runtime-libs: $binary: $missing" >&2; exit 1; }
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
    case $(basename "$lib") in
        libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*|libstdc++.so.*|libgcc_s.so.*) continue ;;
    esac
    # The directory's real path: on a merged-/usr base /lib is a link to usr/lib, and a
    # directory copied over it would replace that link (and the dynamic loader with it).
    dir=$(cd "$(dirname "$lib")" && pwd -P)
    mkdir -p "$dest$dir"
    cp -L "$lib" "$dest$dir/$(basename "$lib")"
done
du -sh "$dest"
