#!/usr/bin/env python3
"""Compares the worker's test accuracies (a sweep's results.json) with the PyTorch twin's
(bench/twin_accuracy.py JSON lines), per model: mean, sample sd, 95% t interval of each, and
Welch's t-test of equal means. Exits 1 when a model's means differ at the 5% level.

    python bench/twin_compare.py out/twin/results.json out/twin/pytorch.jsonl
"""
import json
import math
import sys


def t_cdf(t, df):
    # Student's t CDF through the regularised incomplete beta function (continued fraction).
    x = df / (df + t * t)
    a, b = df / 2.0, 0.5

    def betacf(x, a, b):
        tiny = 1e-300
        c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
        d = 1.0 / (d if abs(d) > tiny else tiny)
        f = d
        for m in range(1, 500):
            for coef in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                         -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
                d = 1.0 + coef * d
                d = 1.0 / (d if abs(d) > tiny else tiny)
                c = 1.0 + coef / c
                c = c if abs(c) > tiny else tiny
                f *= c * d
            if abs(c * d - 1.0) < 1e-15:
                break
        return f

    def ibeta(x, a, b):
        if x <= 0:
            return 0.0
        if x >= 1:
            return 1.0
        if x > (a + 1) / (a + b + 2):
            return 1.0 - ibeta(1 - x, b, a)
        front = math.exp(a * math.log(x) + b * math.log(1 - x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
        return front * betacf(x, a, b) / a

    tail = 0.5 * ibeta(x, a, b)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    lo, hi = 0.0, 1e7
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def summary(xs):
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return n, m, sd, m - half, m + half


def welch(a, b):
    (na, ma, sa, _, _), (nb, mb, sb, _, _) = summary(a), summary(b)
    va, vb = sa * sa / na, sb * sb / nb
    if va + vb == 0:
        return 0.0, float(na + nb - 2), 1.0 if ma == mb else 0.0
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return t, df, 2 * (1 - t_cdf(abs(t), df))


def main():
    worker_rows = json.load(open(sys.argv[1]))
    twin_rows = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
    worker, twin = {}, {}
    for r in worker_rows:
        if r["status"] == "completed":
            worker.setdefault(r["params"]["model"], []).append((r["params"]["seed"], r["test_accuracy"]))
    for r in twin_rows:
        twin.setdefault(r["model"], []).append((r["seed"], r["test_accuracy"]))
    differ = False
    print("| model | trainer | runs | test accuracy per seed | mean | sd | 95% CI |")
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for model in sorted(set(worker) & set(twin)):
        for name, runs in (("worker (tch)", worker[model]), ("PyTorch eager", twin[model])):
            xs = [acc for _, acc in sorted(runs)]
            n, m, sd, lo, hi = summary(xs)
            per_seed = ", ".join(f"{100 * x:.2f}" for x in xs)
            print(f"| {model} | {name} | {n} | {per_seed} | {100 * m:.2f}% | {100 * sd:.2f} | {100 * lo:.2f}-{100 * hi:.2f}% |")
        t, df, p = welch([a for _, a in worker[model]], [a for _, a in twin[model]])
        same = p >= 0.05
        differ |= not same
        verdicts.append(f"{model}: Welch's t = {t:.2f}, df = {df:.1f}, p = {p:.3f}: "
                        + ("the means agree (within noise)" if same else "the means DIFFER at the 5% level"))
    print()
    for v in verdicts:
        print(v)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
