#!/usr/bin/env python3
"""Optuna side of the search benchmark (bench/search.sh): one JSON object per line on stdout.

Quality mode (minimise each function with a fixed budget, P trials pending at a time):
    optuna_side.py --functions branin,hartmann6,mixed --budgets 60:4,100:8 --seeds 0-19 \
                   --samplers optuna-tpe,optuna-tpe-mv,random [--jobs 2]
    -> {"kind":"quality","sampler":S,"function":F,"budget":B,"pending":P,"seed":s,"regret":r}

Latency mode (time to suggest one trial against a history of n finished trials):
    optuna_side.py --latency 100,1000,10000 --latency-dims 8 --latency-repeats 20
    -> {"kind":"latency","sampler":S,"finished":n,"dims":8,"ms_per_suggest":median,"ms_p90":p90}

Samplers: optuna-tpe = TPESampler(seed=seed) with Optuna's defaults; optuna-tpe-mv =
TPESampler(seed=seed, multivariate=True, group=True); random = RandomSampler(seed=seed).
Opt-in: optuna-tpe-indep = TPESampler(seed=seed, multivariate=False) (univariate TPE);
optuna-tpe-nolie = TPESampler(seed=seed, constant_liar=False).
Studies use in-memory storage and the ask/tell interface; every parameter of a trial is
suggested right after ask(), so a trial that waits in `pending` is RUNNING with its params set.

Pending protocol (the Rust side, search-bench, does the same), budget B, pending P:
    pending = deque(); asked = told = 0
    while told < B:
        while len(pending) < P and asked < B: ask, suggest, pending.append; asked += 1
        pop the oldest pending trial, tell it y; told += 1

Regret: branin and hartmann6 (noiseless): min over told values minus the known minimum.
mixed: y = f + Normal(0, 0.1) with the noise from numpy default_rng(seed*100003 + trial
number); the regret is the noiseless f of the told trial with the best (lowest) noisy y,
the first such trial on ties, minus 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections import deque

import numpy as np
import optuna

# ---------------------------------------------------------------------------------------------
# Benchmark functions (minimise). Each has `suggest(trial) -> params` (define-by-run, in a fixed
# order), `f(params) -> noiseless value`, and `minimum`.

BRANIN_MIN = 0.397887357729739
HARTMANN6_MIN = -3.32236801141551
MIXED_MIN = 0.0


def branin(x1: float, x2: float) -> float:
    a, b, c = 1.0, 5.1 / (4.0 * math.pi**2), 5.0 / math.pi
    r, s, t = 6.0, 10.0, 1.0 / (8.0 * math.pi)
    return a * (x2 - b * x1 * x1 + c * x1 - r) ** 2 + s * (1.0 - t) * math.cos(x1) + s


H6_ALPHA = (1.0, 1.2, 3.0, 3.2)
H6_A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
H6_P = tuple(
    tuple(1e-4 * v for v in row)
    for row in (
        (1312, 1696, 5569, 124, 8283, 5886),
        (2329, 4135, 8307, 3736, 1004, 9991),
        (2348, 1451, 3522, 2883, 3047, 6650),
        (4047, 8828, 8732, 5743, 1091, 381),
    )
)


def hartmann6(x: list[float]) -> float:
    total = 0.0
    for alpha, a_row, p_row in zip(H6_ALPHA, H6_A, H6_P):
        inner = sum(a * (xj - p) ** 2 for a, xj, p in zip(a_row, x, p_row))
        total += alpha * math.exp(-inner)
    return -total


MIXED_BASE = {"sgd": 0.0, "adam": 0.1, "rmsprop": 0.3}
MIXED_C = {"sgd": -1.0, "adam": -3.0, "rmsprop": -2.5}
MIXED_NOISE_SD = 0.1


def mixed(p: dict) -> float:
    opt = p["opt"]
    v = MIXED_BASE[opt]
    v += 0.5 * (math.log10(p["lr"]) - MIXED_C[opt]) ** 2
    v += 0.3 * ((math.log2(p["width"]) - 7.0) / 2.0) ** 2
    v += 0.2 if p["act"] == "tanh" else 0.0
    if opt == "sgd":
        v += 2.0 * (p["momentum"] - 0.9) ** 2
    return v


def suggest_branin(trial) -> dict:
    return {"x1": trial.suggest_float("x1", -5.0, 10.0), "x2": trial.suggest_float("x2", 0.0, 15.0)}


def suggest_hartmann6(trial) -> dict:
    return {f"x{i}": trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(1, 7)}


def suggest_mixed(trial) -> dict:
    p = {
        "opt": trial.suggest_categorical("opt", ["sgd", "adam", "rmsprop"]),
        "lr": trial.suggest_float("lr", 1e-5, 1.0, log=True),
        "width": trial.suggest_int("width", 16, 512, log=True),
        "act": trial.suggest_categorical("act", ["relu", "tanh"]),
    }
    if p["opt"] == "sgd":  # conditional parameter
        p["momentum"] = trial.suggest_float("momentum", 0.0, 0.99)
    return p


FUNCTIONS = {
    # name: (suggest, noiseless f, known minimum, noisy)
    "branin": (suggest_branin, lambda p: branin(p["x1"], p["x2"]), BRANIN_MIN, False),
    "hartmann6": (
        suggest_hartmann6,
        lambda p: hartmann6([p[f"x{i}"] for i in range(1, 7)]),
        HARTMANN6_MIN,
        False,
    ),
    "mixed": (suggest_mixed, mixed, MIXED_MIN, True),
}


def mixed_noise(seed: int, trial_index: int) -> float:
    return float(np.random.default_rng(seed * 100003 + trial_index).normal(0.0, MIXED_NOISE_SD))


# ---------------------------------------------------------------------------------------------
# Samplers

SAMPLERS = ("optuna-tpe", "optuna-tpe-mv", "random")
# Opt-in extras (not in the default set): the classic independent TPE, and the default TPE
# without the constant liar (Optuna 5.0.0 defaults to multivariate=True for one objective and
# to constant_liar=True, so optuna-tpe above is neither of these).
EXTRA_SAMPLERS = ("optuna-tpe-indep", "optuna-tpe-nolie")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "optuna-tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "optuna-tpe-mv":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "optuna-tpe-indep":
        return optuna.samplers.TPESampler(seed=seed, multivariate=False)
    if name == "optuna-tpe-nolie":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=False)
    known = ", ".join(SAMPLERS + EXTRA_SAMPLERS)
    raise SystemExit(f"unknown sampler {name!r} (known: {known})")


def new_study(sampler_name: str, seed: int) -> optuna.Study:
    # storage=None is the in-memory storage.
    return optuna.create_study(direction="minimize", sampler=make_sampler(sampler_name, seed))


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.logging.disable_default_handler()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


# ---------------------------------------------------------------------------------------------
# Quality mode


def run_quality(sampler_name: str, function: str, budget: int, pending_n: int, seed: int) -> dict:
    suggest, f, minimum, noisy = FUNCTIONS[function]
    study = new_study(sampler_name, seed)
    pending: deque = deque()
    asked = told = 0
    best_y = math.inf  # best observed (noisy for mixed) value so far
    best_f = math.inf  # noiseless value of that trial
    while told < budget:
        while len(pending) < pending_n and asked < budget:
            trial = study.ask()
            params = suggest(trial)  # suggested now: a pending trial is RUNNING with its params
            pending.append((trial, params))
            asked += 1
        trial, params = pending.popleft()
        fx = f(params)
        y = fx + mixed_noise(seed, trial.number) if noisy else fx
        study.tell(trial, y)
        told += 1
        if y < best_y:  # strict: the first told trial wins ties
            best_y, best_f = y, fx
    return {
        "kind": "quality",
        "sampler": sampler_name,
        "function": function,
        "budget": budget,
        "pending": pending_n,
        "seed": seed,
        "regret": best_f - minimum,
    }


def _quality_job(args: tuple) -> dict:
    quiet()
    return run_quality(*args)


# ---------------------------------------------------------------------------------------------
# Latency mode


def run_latency(sampler_name: str, finished: int, dims: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    names = [f"x{i}" for i in range(dims)]
    distributions = {n: dist for n in names}
    study = new_study(sampler_name, seed)
    xs = rng.random((finished, dims))
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={n: float(v) for n, v in zip(names, row)},
                distributions=distributions,
                value=float(np.sum(row**2)),
            )
            for row in xs
        ]
    )
    times_ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trial = study.ask()  # multivariate TPE samples here ...
        params = [trial.suggest_float(n, 0.0, 1.0) for n in names]  # ... independent TPE here
        times_ms.append(1e3 * (time.perf_counter() - t0))
        study.tell(trial, float(sum(v * v for v in params)))
    return {
        "kind": "latency",
        "sampler": sampler_name,
        "finished": finished,
        "dims": dims,
        "ms_per_suggest": float(np.median(times_ms)),
        "ms_p90": float(np.percentile(times_ms, 90)),  # numpy's default (linear) percentile
    }


# ---------------------------------------------------------------------------------------------
# CLI


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    return seeds


def parse_budgets(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        b, _, p = part.strip().partition(":")
        budget, pending_n = int(b), int(p or 1)
        if budget < 1 or pending_n < 1:
            raise SystemExit(f"bad budget {part!r}: want BUDGET:PENDING, both >= 1")
        out.append((budget, pending_n))
    return out


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--functions", default="branin,hartmann6,mixed")
    ap.add_argument("--budgets", default="60:4,100:8", help="BUDGET:PENDING,...")
    ap.add_argument("--seeds", default="0-19", help="e.g. 0-19 or 0,3,5-7")
    ap.add_argument("--samplers", default=None,
                    help=f"from {','.join(SAMPLERS + EXTRA_SAMPLERS)}; default: "
                    f"{','.join(SAMPLERS)} "
                    "(quality) or optuna-tpe,optuna-tpe-mv (latency)")
    ap.add_argument("--jobs", type=int, default=1, help="quality runs in parallel (processes)")
    ap.add_argument("--latency", default=None, help="latency mode: finished-trial counts, e.g. "
                    "100,1000,10000")
    ap.add_argument("--latency-dims", type=int, default=8)
    ap.add_argument("--latency-repeats", type=int, default=20)
    ap.add_argument("--progress", action="store_true", help="progress lines on stderr")
    args = ap.parse_args()
    quiet()
    print(f"optuna {optuna.__version__}, numpy {np.__version__}", file=sys.stderr)

    if args.latency:
        samplers = (args.samplers or "optuna-tpe,optuna-tpe-mv").split(",")
        for name in samplers:
            # Untimed warm-up in a throwaway study (first calls in a process are a few times
            # slower: imports, caches); it also checks the name before the slow part.
            run_latency(name, 20, args.latency_dims, 5)
        for n in [int(v) for v in args.latency.split(",")]:
            for name in samplers:
                t0 = time.perf_counter()
                emit(run_latency(name, n, args.latency_dims, args.latency_repeats))
                if args.progress:
                    print(f"latency {name} n={n}: {time.perf_counter() - t0:.1f} s",
                          file=sys.stderr)
        return

    samplers = (args.samplers or ",".join(SAMPLERS)).split(",")
    functions = args.functions.split(",")
    for name in samplers:
        make_sampler(name, 0)
    for fn in functions:
        if fn not in FUNCTIONS:
            raise SystemExit(f"unknown function {fn!r} (known: {', '.join(FUNCTIONS)})")
    jobs = [
        (s, fn, b, p, seed)
        for fn in functions
        for b, p in parse_budgets(args.budgets)
        for s in samplers
        for seed in parse_seeds(args.seeds)
    ]
    start = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.imap(_quality_job, jobs)  # in order, so the output is deterministic
            for i, row in enumerate(results, 1):
                emit(row)
                if args.progress and i % 20 == 0:
                    print(f"{i}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s",
                          file=sys.stderr)
    else:
        for i, job in enumerate(jobs, 1):
            emit(run_quality(*job))
            if args.progress and i % 20 == 0:
                print(f"{i}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s",
                      file=sys.stderr)


if __name__ == "__main__":
    main()
