#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS seconds each (default 60), seeded
# with the example sweeps and fuzz/seeds/. Any crash fails the script; libFuzzer writes the
# input that caused it under fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run
# <target> <that file>). Needs the nightly toolchain; installs cargo-fuzz from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: cargo fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

seeds_for() {
    case "$1" in
        sweep_file) echo "examples bench/recipes" ;;
        pickle_batch) echo "fuzz/seeds/pickle" ;;
        binary_batch) echo "fuzz/seeds/binary" ;;
        report) echo "fuzz/seeds/report" ;;
    esac
}

cd fuzz
cargo +nightly fuzz build
for target in sweep_file pickle_batch binary_batch report; do
    mkdir -p "corpus/$target"
    seeds=()
    for s in $(seeds_for "$target"); do seeds+=("../$s"); done
    echo "fuzz: $target for ${seconds}s"
    # -rss_limit_mb: a reader that allocates far beyond its input is a finding too.
    log="$(mktemp)"
    status=0
    cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|==[0-9]+==|panicked|SUMMARY|Test unit written' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target found a crash; see fuzz/artifacts/$target/" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: no crashes"
