#!/usr/bin/env bash
# Early stopping against the full grid, on this machine with real CIFAR-10 (data/):
#   bench/asha.sh [LOCAL_WORKERS]
# Runs bench/asha/grid.toml (27 configurations, 9 epochs each) in full, then the same trials
# with ASHA, reduction factor 3, grace 1 epoch (rungs after epochs 1 and 3) and grace 2 (rungs
# after 2 and 6), each in its own output directory and database so that nothing is reused
# between them, and prints epochs trained and the best test accuracy of each with its 95%
# sampling interval.
# Env: COORDINATOR, WORKER (default target/release/...), OUT (default out/asha-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
COORDINATOR=${COORDINATOR:-target/release/coordinator}
WORKER=${WORKER:-target/release/worker}
OUT=${OUT:-out/asha-bench}
WORKERS=${1:-2}
[ -d data/cifar-10-batches-bin ] || { echo "data/ has no CIFAR-10: run scripts/prepare-data.sh" >&2; exit 1; }
mkdir -p "$OUT"
for grace in 1 2; do
    sed "s/^name = \"asha-bench\"/name = \"asha-bench-grace$grace\"/" bench/asha/grid.toml > bench/asha/.asha-grace$grace.toml
    printf '\n[early_stopping]\nmethod = "asha"\nmetric = "val_accuracy"\ngrace_epochs = %s\nreduction_factor = 3\n' "$grace" >> bench/asha/.asha-grace$grace.toml
done
trap 'rm -f bench/asha/.asha-grace*.toml' EXIT

for run in full asha-grace1 asha-grace2; do
    file=bench/asha/grid.toml
    [ "$run" != full ] && file=bench/asha/.$run.toml
    rm -rf "${OUT:?}/$run"
    start=$(date +%s)
    SWEEP_WORKER_BIN=$WORKER "$COORDINATOR" sweep --quiet --local-workers "$WORKERS" --out "$OUT/$run" "$file" > "$OUT/$run.log" 2>&1
    echo $(( $(date +%s) - start )) > "$OUT/$run.seconds"
done

python3 - "$OUT" <<'PY'
import json, math, sys
out = sys.argv[1]
rows = {}
print("| run | trials | stopped | epochs trained | share of full | best test accuracy (95% sampling interval) | best trial | wall time |")
print("|---|---|---|---|---|---|---|---|")
full_epochs = None
for run in ["full", "asha-grace1", "asha-grace2"]:
    r = json.load(open(f"{out}/{run}/results.json"))
    rows[run] = r
    epochs = sum(len(t["epochs"]) for t in r)
    full_epochs = full_epochs or epochs
    ranked = [t for t in r if t.get("test_accuracy") is not None]
    best = max(ranked, key=lambda t: t["test_accuracy"])
    p, n = best["test_accuracy"], 10000
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    name = ", ".join(f"{k}={best['params'][k]}" for k in ["lr", "optimizer", "schedule"])
    secs = open(f"{out}/{run}.seconds").read().strip()
    stopped = sum(t["status"] == "stopped" for t in r)
    print(f"| {run} | {len(r)} | {stopped} | {epochs} | {100 * epochs / full_epochs:.0f}% | "
          f"{100 * p:.2f}% ({100 * (p - half):.2f}-{100 * (p + half):.2f}) | {name} | {secs} s |")
# Where the full grid's best trials ended under ASHA.
full = sorted(rows["full"], key=lambda t: -(t.get("test_accuracy") or 0))
g1 = {t["id"]: t for t in rows["asha-grace1"]}
g2 = {t["id"]: t for t in rows["asha-grace2"]}
print()
print("The full grid's five best trials under ASHA (status, epochs, test accuracy):")
print()
print("| trial | full | ASHA grace 1 | ASHA grace 2 |")
print("|---|---|---|---|")
cell = lambda a: f"{a.get('status')}, {len(a.get('epochs', []))}, {100 * (a.get('test_accuracy') or 0):.2f}%"
for t in full[:5]:
    name = ", ".join(f"{k}={t['params'][k]}" for k in ["lr", "optimizer", "schedule"])
    print(f"| {name} | {100 * t['test_accuracy']:.2f}% | {cell(g1.get(t['id'], {}))} | {cell(g2.get(t['id'], {}))} |")
PY
