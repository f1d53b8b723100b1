#!/usr/bin/env bash
# Population-based training against random search and against PBT's own replay, on real
# CIFAR-10 (data/) on this machine:
#   bench/pbt.sh
# For each seed S: (1) PBT, `search = "pbt"`, a population of POP members over lr, momentum
# and weight decay, EPOCHS epochs each in segments of INTERVAL; (2) random search, POP trials
# drawn from the same space (the same total epochs: POP x EPOCHS), trained EPOCHS epochs
# each with fixed values; (3) the replay: the best PBT member's whole schedule (replay.toml)
# trained from scratch by `worker train`, with another weight seed (S + 1000; with the same
# seed it would end bit for bit as the member did). PBT and random search both pick their
# best by validation accuracy; the table gives that trial's test accuracy, and the best test
# accuracy of any trial beside it. Each run has its own output folder and database, so
# nothing is reused between them.
# Also printed: the checkpoint bytes each segment moves (from the coordinator's checkpoint
# files) and the time between generations (from the coordinator's log).
# Env: SEEDS (default "1 2 3"), POP (8), EPOCHS (8), INTERVAL (2), MODEL (resnet20),
# TRAIN_IMAGES (2000, one training batch file), TEST_IMAGES (2000), WORKERS (local workers,
# 2), COORDINATOR, WORKER (default target/release/...), OUT (default out/pbt-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
COORDINATOR=${COORDINATOR:-target/release/coordinator}
WORKER=${WORKER:-target/release/worker}
OUT=${OUT:-out/pbt-bench}
SEEDS=${SEEDS:-1 2 3}
POP=${POP:-8}
EPOCHS=${EPOCHS:-8}
INTERVAL=${INTERVAL:-2}
MODEL=${MODEL:-resnet20}
TRAIN_IMAGES=${TRAIN_IMAGES:-2000}
TEST_IMAGES=${TEST_IMAGES:-2000}
WORKERS=${WORKERS:-2}
[ -d data/cifar-10-batches-bin ] || { echo "data/ has no CIFAR-10: run scripts/prepare-data.sh" >&2; exit 1; }
[ -x "$COORDINATOR" ] && [ -x "$WORKER" ] || { echo "build first: cargo build --release -p coordinator -p worker" >&2; exit 1; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$PWD/data

# The part both searches share: the data, the model, the budget per trial.
common() {
    cat <<EOF
data = "$DATA"
rank_by = "best_val_accuracy"
search_seed = $1
keep_models = "none"

[defaults]
model = "$MODEL"
train_batches = 1
train_images = $TRAIN_IMAGES
test_images = $TEST_IMAGES
validation_split = 0.1
epochs = $EPOCHS
optimizer = "sgd"
seed = $1
EOF
}

for s in $SEEDS; do
    for run in pbt random; do
        file=$OUT/$run-$s.toml
        {
            echo "name = \"pbt-bench-$run-$s\""
            if [ $run = pbt ]; then
                echo 'search = "pbt"'
                common "$s"
                printf '\n[pbt]\npopulation = %s\ninterval_epochs = %s\n' "$POP" "$INTERVAL"
                printf '\n[pbt.mutations]\n'
            else
                echo 'search = "random"'
                echo "samples = $POP"
                common "$s"
                printf '\n[grid]\n'
            fi
            echo 'lr = { min = 1e-3, max = 0.3, log = true }'
            echo 'momentum = { min = 0.8, max = 0.99 }'
            echo 'weight_decay = [0.0, 1e-4, 5e-4, 1e-3]'
        } > "$file"
        rm -rf "${OUT:?}/$run-$s"
        echo "seed $s: $run" >&2
        start=$(date +%s)
        RUST_LOG=info SWEEP_WORKER_BIN=$WORKER "$COORDINATOR" sweep --quiet --local-workers "$WORKERS" \
            --out "$OUT/$run-$s" "$file" > "$OUT/$run-$s.log" 2>&1
        echo $(( $(date +%s) - start )) > "$OUT/$run-$s.seconds"
    done
    # The replay, with another weight seed.
    sed "s/^seed = .*/seed = $(( s + 1000 ))/" "$OUT/pbt-$s/replay.toml" > "$OUT/replay-$s.toml"
    grep -q "^seed = $(( s + 1000 ))" "$OUT/replay-$s.toml" || { echo "replay.toml has no seed line" >&2; exit 1; }
    echo "seed $s: replay" >&2
    start=$(date +%s)
    CIFAR10_DATA=$DATA "$WORKER" train "$OUT/replay-$s.toml" --json "$OUT/replay-$s.json" > "$OUT/replay-$s.log" 2>&1
    echo $(( $(date +%s) - start )) > "$OUT/replay-$s.seconds"
done

python3 bench/pbt_summary.py "$OUT" $SEEDS
