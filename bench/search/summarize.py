#!/usr/bin/env python3
"""Markdown tables from search-benchmark JSON lines (bench/search.sh).

    summarize.py FILE.jsonl [FILE.jsonl ...]

Reads any mix of the Rust side (search-bench: sampler "ours", maybe "ours-*") and the Optuna
side (optuna_side.py). Lines that are not JSON objects with a known "kind" are skipped; a
repeated (sampler, function, budget, pending, seed) or (sampler, finished, dims) keeps the
last one read, with a warning on stderr.

Quality: one row per (function, budget:pending); per sampler the median regret over seeds and
its quartiles [q1, q3] (linear interpolation, as numpy's default); "ours / X" is the ratio of
median regrets (below 1: ours is better). "beats random" lists the samplers whose regrets are
lower than random's by a one-sided Mann-Whitney U test at p < 0.05 (normal approximation
with tie and continuity corrections).

Latency: one row per (finished, dims); per sampler the median ms per suggestion and its
90th percentile; "X / ours" is the ratio of medians (above 1: ours is faster).

Standard library only.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict

PREFERRED = ["ours", "optuna-tpe", "optuna-tpe-mv", "optuna-tpe-indep", "optuna-tpe-nolie"]


def sampler_order(names) -> list[str]:
    def key(name: str):
        if name == "ours":
            return (0, name)
        if name.startswith("ours"):
            return (1, name)
        if name in PREFERRED:
            return (2, PREFERRED.index(name), name)
        if name == "random":
            return (4, name)
        return (3, name)

    return sorted(set(names), key=key)


def quantile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    if not sorted_xs:
        return math.nan
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def median(xs: list[float]) -> float:
    return quantile(sorted(xs), 0.5)


def mann_whitney_less(a: list[float], b: list[float]) -> float:
    """One-sided p-value for 'a tends to be smaller than b' (normal approximation)."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return math.nan
    u = sum(1.0 if x < y else 0.5 if x == y else 0.0 for x in a for y in b)
    n = n1 + n2
    counts: dict[float, int] = defaultdict(int)
    for v in a + b:
        counts[v] += 1
    ties = sum(t**3 - t for t in counts.values())
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2.0))  # P(Z >= z)


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3g}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "—"
    if b == 0:
        return "0/0" if a == 0 else "∞"
    return f"{a / b:.2f}"


def read(paths: list[str]):
    quality: dict[tuple, float] = {}
    latency: dict[tuple, dict] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    print(f"{path}:{lineno}: not JSON, skipped", file=sys.stderr)
                    continue
                try:
                    if row.get("kind") == "quality":
                        key = (row["function"], int(row["budget"]), int(row["pending"]),
                               row["sampler"], int(row["seed"]))
                        if key in quality:
                            print(f"{path}:{lineno}: repeated {key}, keeping this one",
                                  file=sys.stderr)
                        quality[key] = float(row["regret"])
                    elif row.get("kind") == "latency":
                        key = (int(row["finished"]), int(row["dims"]), row["sampler"])
                        if key in latency:
                            print(f"{path}:{lineno}: repeated {key}, keeping this one",
                                  file=sys.stderr)
                        latency[key] = row
                except (KeyError, TypeError, ValueError) as err:
                    print(f"{path}:{lineno}: bad row ({err!r}), skipped", file=sys.stderr)
    return quality, latency


def quality_table(quality: dict[tuple, float]) -> list[str]:
    groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (function, budget, pending, sampler, _seed), regret in quality.items():
        groups[(function, budget, pending)][sampler].append(regret)
    samplers = sampler_order(s for g in groups.values() for s in g)
    refs = [r for r in ("optuna-tpe", "optuna-tpe-mv") if r in samplers and "ours" in samplers]

    header = ["function", "budget:pending"] + samplers + [f"ours / {r}" for r in refs]
    if "optuna-tpe" in refs:
        header += ["MW p: ours better / optuna-tpe better"]
    header += ["n seeds", "beats random (MW p<0.05)"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    log_ratios: dict[str, list[float]] = defaultdict(list)
    for (function, budget, pending) in sorted(groups):
        g = groups[(function, budget, pending)]
        medians = {s: median(v) for s, v in g.items()}
        cells = [function, f"{budget}:{pending}"]
        for s in samplers:
            if s not in g:
                cells.append("—")
                continue
            xs = sorted(g[s])
            cells.append(f"{fmt(medians[s])} [{fmt(quantile(xs, 0.25))}, {fmt(quantile(xs, 0.75))}]")
        for r in refs:
            cells.append(ratio(medians.get("ours"), medians.get(r)))
            a, b = medians.get("ours"), medians.get(r)
            if a is not None and b is not None and a > 0 and b > 0:
                log_ratios[r].append(math.log(a / b))
        if "optuna-tpe" in refs:
            if "ours" in g and "optuna-tpe" in g:
                cells.append(f"{mann_whitney_less(g['ours'], g['optuna-tpe']):.3f} / "
                             f"{mann_whitney_less(g['optuna-tpe'], g['ours']):.3f}")
            else:
                cells.append("—")
        counts = sorted({len(v) for v in g.values()})
        cells.append(str(counts[0]) if len(counts) == 1 else
                     "/".join(f"{s}:{len(g[s])}" for s in samplers if s in g))
        if "random" in g:
            winners = [s for s in samplers if s in g and s != "random"
                       and mann_whitney_less(g[s], g["random"]) < 0.05]
            cells.append(", ".join(winners) if winners else "none")
        else:
            cells.append("(no random)")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Cells: median regret over seeds [q1, q3]; lower is better. "
               "ours / X: ratio of median regrets, below 1 means ours is better. "
               "MW p: one-sided Mann-Whitney p-values that ours has the lower regrets, and "
               "that Optuna's TPE has (below 0.05: a difference beyond noise).")
    for r in refs:
        if log_ratios[r]:
            gm = math.exp(sum(log_ratios[r]) / len(log_ratios[r]))
            out.append(f"Geometric mean of ours / {r} over {len(log_ratios[r])} rows: {gm:.2f}.")
    return out


def latency_table(latency: dict[tuple, dict]) -> list[str]:
    samplers = sampler_order(k[2] for k in latency)
    refs = [s for s in samplers if s != "ours"] if "ours" in samplers else []
    header = ["finished", "dims"] + [f"{s} ms (p90)" for s in samplers]
    header += [f"{r} / ours" for r in refs]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for finished, dims in sorted({(k[0], k[1]) for k in latency}):
        cells = [str(finished), str(dims)]
        med = {}
        for s in samplers:
            row = latency.get((finished, dims, s))
            if row is None:
                cells.append("—")
                continue
            med[s] = float(row["ms_per_suggest"])
            p90 = row.get("ms_p90")
            cells.append(f"{fmt(med[s])} ({fmt(float(p90))})" if p90 is not None else fmt(med[s]))
        for r in refs:
            cells.append(ratio(med.get(r), med.get("ours")))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Cells: median ms per suggestion (ask plus every suggest of one trial) over the "
               "repeats, 90th percentile in brackets. X / ours above 1 means ours is faster.")
    return out


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    quality, latency = read(sys.argv[1:])
    if not quality and not latency:
        raise SystemExit("no quality or latency rows in " + ", ".join(sys.argv[1:]))
    if quality:
        print("## Search quality: regret after the budget\n")
        print("\n".join(quality_table(quality)))
        print()
    if latency:
        print("## Suggestion latency\n")
        print("\n".join(latency_table(latency)))
        print()


if __name__ == "__main__":
    main()
