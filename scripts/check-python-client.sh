#!/usr/bin/env bash
# The wire protocol from another language: generates Python stubs from proto/proto/sweep.proto
# (grpcio-tools, in its own venv .venv-pyclient), starts a real `coordinator serve` on a free
# loopback port with a one-trial sweep, and runs scripts/python_client_check.py against it,
# then checks that the report holds the client's values bit for bit.
# Needs target/debug/coordinator (cargo build -p coordinator).
set -euo pipefail
cd "$(dirname "$0")/.."

COORDINATOR=${COORDINATOR:-target/debug/coordinator}
[ -x "$COORDINATOR" ] || cargo build -p coordinator
VENV=.venv-pyclient
if ! "$VENV/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q grpcio grpcio-tools
fi
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$VENV/bin/python" -m grpc_tools.protoc -I proto/proto --python_out="$work" --grpc_python_out="$work" sweep.proto
printf 'name = "pyclient"\n[defaults]\nepochs = 1\n' > "$work/sweep.toml"
"$COORDINATOR" submit "$work/sweep.toml" --db "$work/c.db" >/dev/null
# Starts `coordinator serve` on DB (logging to LOG) on a free loopback port: sets $server
# (its pid) and $addr (where it listens).
serve_on() {
    SWEEP_TOKEN=python-check-token "$COORDINATOR" serve --listen 127.0.0.1:0 --db "$1" 2> "$2" &
    server=$!
    addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/^coordinator: serving workers on \([0-9.:]*\) .*/\1/p' "$2")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$2" >&2; echo "check-python-client: serve did not start" >&2; exit 1; }
}
serve_on "$work/c.db" "$work/serve.log"
"$VENV/bin/python" scripts/python_client_check.py "$work" "$addr" python-check-token
kill "$server"; wait "$server" 2>/dev/null || true; server=""
"$COORDINATOR" report pyclient --db "$work/c.db" --out "$work/report" >/dev/null
"$VENV/bin/python" - "$work/report/results.json" <<'PY'
import json, sys
row = json.load(open(sys.argv[1]))[0]
assert row["best_val_accuracy"] == 0.11147540983606559, row["best_val_accuracy"]
assert row["epochs"][0]["train_accuracy"] == 0.11147540983606559, row["epochs"]
print("ok: the report holds the client's values bit for bit")
PY

# The same client drives a TPE search (search = "tpe") to its end, twice from scratch: the
# budget is met exactly, no trial comes twice, and the two runs suggest the same sequence.
cat > "$work/tpe.toml" <<'TOML'
name = "pytpe"
search = "tpe"
trials = 24
startup_trials = 8
search_seed = 11
[defaults]
epochs = 1
[grid]
lr = { min = 1e-5, max = 1.0, log = true }
optimizer = ["sgd", "adam"]
momentum = { min = 0.5, max = 0.99, when = { optimizer = "sgd" } }
TOML
tpe_run() {
    local db="$work/tpe-$1.db"
    "$COORDINATOR" submit "$work/tpe.toml" --db "$db" >/dev/null
    serve_on "$db" "$work/tpe-serve-$1.log"
    "$VENV/bin/python" scripts/python_tpe_worker.py "$work" "$addr" python-check-token > "$work/tpe-$1.txt"
    kill "$server"; wait "$server" 2>/dev/null || true; server=""
    "$COORDINATOR" status pytpe --db "$db" > "$work/tpe-status-$1.txt"
}
tpe_run 1
tpe_run 2
"$VENV/bin/python" - "$work" <<'PY'
import sys
work = sys.argv[1]
runs = [open(f"{work}/tpe-{i}.txt").read().split("\n") for i in (1, 2)]
rows = [[l.split() for l in r if l] for r in runs]
assert len(rows[0]) == 24, f"{len(rows[0])} trials, not the budget of 24"
assert len({r[0] for r in rows[0]}) == 24, "a trial came twice"
assert rows[0] == rows[1], "two runs with the same seed suggested different sequences"
status = open(f"{work}/tpe-status-1.txt").read()
assert "24 finished" in status, status
best = max(float(r[3]) for r in rows[0])
print(f"ok: a Python worker drove a TPE search of 24 trials to its end, twice, the same sequence (best accuracy {best:.3f})")
PY

# The same kind of client takes part in a population (search = "pbt"), twice from scratch:
# every segment after the first generation starts from a checkpoint (its own or another
# member's, loaded over the protocol), the population ends with all its segments, and the two
# runs make the same history.
cat > "$work/pbt.toml" <<'TOML'
name = "pypbt"
search = "pbt"
search_seed = 5
[defaults]
epochs = 6
validation_split = 0.1
optimizer = "sgd"
[pbt]
population = 4
interval_epochs = 2
[pbt.mutations]
lr = { min = 1e-4, max = 1.0, log = true }
TOML
pbt_run() {
    local db="$work/pbt-$1.db"
    "$COORDINATOR" submit "$work/pbt.toml" --db "$db" >/dev/null
    serve_on "$db" "$work/pbt-serve-$1.log"
    "$VENV/bin/python" scripts/python_pbt_worker.py "$work" "$addr" python-check-token > "$work/pbt-$1.txt"
    kill "$server"; wait "$server" 2>/dev/null || true; server=""
    "$COORDINATOR" status pypbt --db "$db" > "$work/pbt-status-$1.txt"
    "$COORDINATOR" report pypbt --db "$db" --out "$work/pbt-report-$1" >/dev/null
}
pbt_run 1
pbt_run 2
"$VENV/bin/python" - "$work" <<'PY'
import sys
work = sys.argv[1]
runs = [[l.split() for l in open(f"{work}/pbt-{i}.txt").read().split("\n") if l] for i in (1, 2)]
assert len(runs[0]) == 12, f"{len(runs[0])} segments, not 4 members x 3"
assert all(int(r[1]) == int(r[2]) - 2 for r in runs[0]), f"a segment did not start from a checkpoint: {runs[0]}"
assert sorted(runs[0]) == sorted(runs[1]), "two runs with the same seed made different populations"
status = open(f"{work}/pbt-status-1.txt").read()
assert "12 finished" in status, status
import re
section = open(f"{work}/pbt-report-1/report.md").read().split("## Population-based training")[1]
assert re.search(r"\| member \d+ \|", section), f"no member copied another:\n{section}"
best = max(float(r[3]) for r in runs[0])
print(f"ok: a Python worker took part in a PBT population of 4 x 3 segments, twice, the same history (best accuracy {best:.3f})")
PY
