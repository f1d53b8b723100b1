"""Checks that the metrics, their docs, their test and the Grafana dashboard agree:
    python3 deploy/grafana/check.py docs/METRICS.md tests/tests/metrics.rs \
        deploy/grafana/sweep-cluster.json [SCRAPE...]

- every metric docs/METRICS.md lists is read back through Prometheus by the metrics test
  (so a documented metric is exported, or that test fails);
- every family a scrape (`curl /metrics` of a running coordinator or worker) declares with
  `# TYPE` is documented (so an exported metric is documented);
- the dashboard parses as JSON, every panel has a query, and every metric name in a query is
  a documented one, with the suffixes its type allows (`_total` for counters; `_bucket`,
  `_sum`, `_count` for histograms).
Exits 1 with every disagreement listed.
"""

import json
import re
import sys

docs, test, dashboard, *scrapes = sys.argv[1:]
problems = []

# docs: table rows "| `name` | type | ..." under the metric tables.
documented = {}
for m in re.finditer(r"^\| `((?:coordinator|worker)_[a-z_]+)` \| (gauge|counter|histogram) \|",
                     open(docs).read(), re.M):
    name, kind = m.group(1), m.group(2)
    # Counters are documented as sampled (`_total`); OpenMetrics names the family without.
    if kind == "counter" and name.endswith("_total"):
        name = name[: -len("_total")]
    documented[name] = kind
if not documented:
    problems.append(f"{docs}: no metric table found")


def family(name):
    """The documented family a sample name belongs to, if any."""
    if documented.get(name) in ("gauge", "counter", "histogram"):
        # A histogram or counter is only ever queried through its samples.
        return name if documented[name] == "gauge" else None
    for suffix, kinds in (("_total", ("counter",)), ("_bucket", ("histogram",)),
                          ("_sum", ("histogram",)), ("_count", ("histogram",))):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and documented.get(base) in kinds:
            return base
    return None


test_text = open(test).read()
for name, kind in documented.items():
    sample = name + "_total" if kind == "counter" else name
    if kind == "histogram":
        sample = name + "_count"
    if sample not in test_text and name not in test_text:
        problems.append(f"{name} is documented but {test} never queries it")

for scrape in scrapes:
    for m in re.finditer(r"^# TYPE (\S+) (\S+)", open(scrape).read(), re.M):
        name, kind = m.group(1), m.group(2)
        if documented.get(name) != kind:
            problems.append(f"{scrape}: {name} ({kind}) is exported but not documented as such in {docs}")

board = json.load(open(dashboard))
panels = board.get("panels") or []
if not panels:
    problems.append(f"{dashboard}: no panels")
for p in panels:
    targets = p.get("targets") or []
    if not targets:
        problems.append(f"{dashboard}: panel {p.get('title')!r} has no query")
    for t in targets:
        expr = t.get("expr", "")
        names = set(re.findall(r"\b((?:coordinator|worker)_[a-z_]+)\b", expr))
        if not names:
            problems.append(f"{dashboard}: panel {p.get('title')!r}: {expr!r} names no metric of ours")
        for n in sorted(names):
            if family(n) is None:
                problems.append(f"{dashboard}: panel {p.get('title')!r}: {n} is not a metric we export")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"metrics: {len(documented)} documented, each queried by the test; "
      f"{len(panels)} dashboard panels name only them")
