#!/usr/bin/env bash
# Our TPE sampler (Rust, search-bench) against Optuna 5.0.0 (bench/search/optuna_side.py), side by side:
#   bench/search.sh
# Quality: each sampler minimises branin (2-d), hartmann6 (6-d) and mixed (categorical, log
# float, log int, and a parameter conditional on the optimiser; observed with Normal(0, 0.1)
# noise) within a fixed budget of trials, P of them pending (asked, not yet told) at a time,
# once per seed; the tables give the median regret over seeds with quartiles, ratios to
# Optuna's TPE, and which samplers beat random search. Optuna samplers: optuna-tpe
# (TPESampler defaults), optuna-tpe-mv (multivariate=True, group=True), random.
# Latency: ms to suggest one 8-parameter trial against 100, 1,000 and 10,000 finished trials.
# Time, on 2 cores: the Optuna quality side takes about 1 minute at the defaults (20 seeds, 3
# functions, 2 budgets, 3 samplers: 360 runs of 60-100 trials; JOBS=2 halves it), its latency
# side 10-30 s; plus the cargo build and the Rust side; the first run also creates the venv
# (pip, under a minute). Latency is wall time: run it on an otherwise idle machine.
# Env: SEEDS (default 0-19), BUDGETS (BUDGET:PENDING,..., default 60:4,100:8), FUNCTIONS
# (default branin,hartmann6,mixed), SAMPLERS (Optuna side, default
# optuna-tpe,optuna-tpe-mv,random), LATENCY (finished counts, default 100,1000,10000),
# DIMS (8), REPEATS (20), PARTS (default "quality latency"), JOBS (processes for the Optuna
# quality side, default 1), SEARCH_VENV (default target/search-venv), OUT (default
# target/search-bench), PYTHON (to create the venv, default python3), OTHER_PENDING=1 (also
# run ours with the other rule for pending trials: "ours-liar", the constant liar).
# Writes $OUT/{ours,optuna}-{quality,latency}.jsonl and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=${SEEDS:-0-19}
BUDGETS=${BUDGETS:-60:4,100:8}
FUNCTIONS=${FUNCTIONS:-branin,hartmann6,mixed}
SAMPLERS=${SAMPLERS:-optuna-tpe,optuna-tpe-mv,random}
LATENCY=${LATENCY:-100,1000,10000}
DIMS=${DIMS:-8}
REPEATS=${REPEATS:-20}
PARTS=${PARTS:-quality latency}
JOBS=${JOBS:-1}
VENV=${SEARCH_VENV:-target/search-venv}
OUT=${OUT:-target/search-bench}
PYTHON=${PYTHON:-python3}
OPTUNA_VERSION=5.0.0

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import optuna, sys; sys.exit(optuna.__version__ != '$OPTUNA_VERSION')" 2>/dev/null; then
    echo "installing optuna==$OPTUNA_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "optuna==$OPTUNA_VERSION"
fi

cargo build --release -p load-bench --bin search-bench
BENCH=${CARGO_TARGET_DIR:-target}/release/search-bench

mkdir -p "$OUT"
files=()
for part in $PARTS; do
    case $part in
        quality)
            echo "quality: ours" >&2
            "$BENCH" quality --functions "$FUNCTIONS" --budgets "$BUDGETS" --seeds "$SEEDS" \
                ${OTHER_PENDING:+--other-pending} > "$OUT/ours-quality.jsonl"
            echo "quality: optuna ($SAMPLERS)" >&2
            "$VENV/bin/python" bench/search/optuna_side.py --functions "$FUNCTIONS" \
                --budgets "$BUDGETS" --seeds "$SEEDS" --samplers "$SAMPLERS" --jobs "$JOBS" \
                > "$OUT/optuna-quality.jsonl"
            files+=("$OUT/ours-quality.jsonl" "$OUT/optuna-quality.jsonl")
            ;;
        latency)
            # One side at a time, so that neither times the other's load.
            echo "latency: ours" >&2
            "$BENCH" latency --finished "$LATENCY" --dims "$DIMS" --repeats "$REPEATS" \
                > "$OUT/ours-latency.jsonl"
            echo "latency: optuna" >&2
            "$VENV/bin/python" bench/search/optuna_side.py --latency "$LATENCY" \
                --latency-dims "$DIMS" --latency-repeats "$REPEATS" > "$OUT/optuna-latency.jsonl"
            files+=("$OUT/ours-latency.jsonl" "$OUT/optuna-latency.jsonl")
            ;;
        *) echo "unknown part '$part' in PARTS (quality, latency)" >&2; exit 2 ;;
    esac
done
[ ${#files[@]} -gt 0 ] || { echo "PARTS is empty" >&2; exit 2; }

"$VENV/bin/python" bench/search/summarize.py "${files[@]}" | tee "$OUT/summary.md"
