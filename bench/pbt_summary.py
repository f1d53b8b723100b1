"""Summarises bench/pbt.sh: python3 bench/pbt_summary.py OUT SEED...

Per seed: PBT's pick (the last-generation member with the best final validation accuracy),
random search's pick (the trial with the best final validation accuracy), the replay of PBT's
pick from scratch with another weight seed; the test accuracy of each, the best test
accuracy of any trial beside it, and wall time. Then the median over seeds, the per-seed
differences, checkpoint bytes per segment and the wait between generations.
"""

import glob
import json
import os
import re
import sqlite3
import statistics
import sys
from datetime import datetime

out, seeds = sys.argv[1], sys.argv[2:]


def final_val(row):
    epochs = row.get("epochs") or []
    return epochs[-1].get("val_accuracy") if epochs else None


def pick(rows, full_epochs):
    """The trial with the best final validation accuracy among those that trained every
    epoch (for PBT: the last generation's members)."""
    done = [r for r in rows if r["test_accuracy"] is not None and len(r["epochs"]) >= full_epochs
            and final_val(r) is not None]
    return max(done, key=final_val), done


def secs(name):
    return int(open(f"{out}/{name}.seconds").read())


def pct(x):
    return f"{100 * x:.2f}%"


rows = []
for s in seeds:
    pbt = json.load(open(f"{out}/pbt-{s}/results.json"))
    rnd = json.load(open(f"{out}/random-{s}/results.json"))
    epochs = max(len(r["epochs"]) for r in pbt)
    p, p_all = pick(pbt, epochs)
    q, q_all = pick(rnd, epochs)
    replay = json.load(open(f"{out}/replay-{s}.json"))
    rows.append({
        "seed": s,
        "pbt": p["test_accuracy"], "pbt_max": max(r["test_accuracy"] for r in p_all),
        "pbt_val": final_val(p),
        "random": q["test_accuracy"], "random_max": max(r["test_accuracy"] for r in q_all),
        "random_val": final_val(q),
        "replay": replay["test"]["accuracy"],
        "random_lr": q["params"]["lr"],
        "pbt_s": secs(f"pbt-{s}"), "random_s": secs(f"random-{s}"), "replay_s": secs(f"replay-{s}"),
        "segments": len(pbt),
    })

print("| seed | PBT: pick's test acc (val) | PBT: best test acc of any member | random: pick's test acc (val) | random: best test acc | replay of PBT's pick, seed+1000 | PBT - random | wall s: PBT / random / replay |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['seed']} | {pct(r['pbt'])} ({pct(r['pbt_val'])}) | {pct(r['pbt_max'])} | "
          f"{pct(r['random'])} ({pct(r['random_val'])}) | {pct(r['random_max'])} | {pct(r['replay'])} | "
          f"{100 * (r['pbt'] - r['random']):+.2f} | {r['pbt_s']} / {r['random_s']} / {r['replay_s']} |")
med = lambda k: statistics.median(r[k] for r in rows)
print(f"| median | {pct(med('pbt'))} | {pct(med('pbt_max'))} | {pct(med('random'))} | "
      f"{pct(med('random_max'))} | {pct(med('replay'))} | "
      f"{100 * statistics.median(r['pbt'] - r['random'] for r in rows):+.2f} | "
      f"{med('pbt_s'):.0f} / {med('random_s'):.0f} / {med('replay_s'):.0f} |")
print()
print("PBT segments per run:", ", ".join(str(r["segments"]) for r in rows))

# From the workers' logs: the checkpoint bytes each segment moves (every segment but the last
# generation's saves one; every later segment loads one, its own previous one or its
# parent's); the time a worker waits between two segments of one generation (from "result
# accepted" to "training" the next); and at each generation's end, the time from its last
# result (on any worker) to each worker's first segment of the next.
ts = re.compile(r"^(\S+Z)\s")
saved, loaded, within, between = [], [], [], []
for s in seeds:
    db = sqlite3.connect(f"{out}/pbt-{s}/sweep.db")
    position = dict(db.execute("select trial, position from sweep_trials"))
    pop = int(re.search(r"^population = (\d+)", open(f"{out}/pbt-{s}.toml").read(), re.M).group(1))
    last_result, first_training = {}, {}
    for log in glob.glob(f"{out}/pbt-{s}/worker-*.log"):
        prev = None
        for line in open(log):
            m = ts.match(line)
            trial = re.search(r"trial=(\w+)", line)
            if not m or not trial:
                continue
            t = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
            gen = position[trial.group(1)] // pop
            size = re.search(r"size=(\d+)", line)
            if "saved on the coordinator" in line and "kind=Checkpoint" in line and size:
                saved.append(int(size.group(1)))
            elif "resuming from a checkpoint" in line and size:
                loaded.append(int(size.group(1)))
            elif "result accepted" in line:
                prev = (t, gen)
                last_result[gen] = max(t, last_result.get(gen, t))
            elif " training trial=" in line:
                if prev and prev[1] == gen:
                    within.append((t - prev[0]).total_seconds())
                first_training.setdefault((log, gen), t)
    for (log, gen), t in first_training.items():
        if gen - 1 in last_result:
            between.append((t - last_result[gen - 1]).total_seconds())


def spread(xs, unit, fmt):
    return (f"median {fmt(statistics.median(xs))}{unit}, min {fmt(min(xs))}, max {fmt(max(xs))} "
            f"over {len(xs)}")


print()
if saved:
    print("checkpoint bytes saved per segment:", spread(saved, " B", lambda x: f"{x:,.0f}"))
if loaded:
    print("checkpoint bytes loaded per segment:", spread(loaded, " B", lambda x: f"{x:,.0f}"))
if within:
    print("worker wait between segments of one generation:", spread(within, " s", lambda x: f"{x:.3f}"))
if between:
    print("from a generation's last result to each worker's first segment of the next:",
          spread(between, " s", lambda x: f"{x:.3f}"))
