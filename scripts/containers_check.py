#!/usr/bin/env python3
"""The end of scripts/check-containers.sh: every trial finished exactly once.

    containers_check.py DB TRIALS KILLED_TRIAL CUT_TRIAL CUT_NAME WORKER_LOG...

- DB (copied off the stopped coordinator's volume) holds TRIALS trials, all finished;
- each has exactly one accepted result in the workers' logs ("result accepted ... worker=
  trial= attempt= result={json}", as the worker logs it), from the worker and attempt the
  database names, and the database holds exactly the result that worker sent;
- KILLED_TRIAL (its worker was killed) counted on a later attempt;
- the worker named CUT_NAME (its ids are CUT_NAME-...: after the partition it registers again
  under a new id) sent a result for CUT_TRIAL after its partition, and it was refused ("result
  not accepted"); the trial counted on a later attempt.
"""

import json
import re
import sqlite3
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sent_results(paths):
    out = []
    for path in paths:
        for line in open(path, encoding="utf-8", errors="replace"):
            line = ANSI.sub("", line)
            accepted = "result accepted" in line
            if not accepted and "result not accepted" not in line:
                continue
            fields = dict(re.findall(r" (worker|trial|attempt)=(\S+)", line))
            result, _ = json.JSONDecoder().raw_decode(line[line.index(" result=") + 8:])
            out.append({"worker": fields["worker"], "trial": fields["trial"],
                        "attempt": int(fields["attempt"]), "accepted": accepted,
                        "result": result, "log": path})
    return out


def brief(sent):
    return [f"{s['worker']} attempt {s['attempt']} ({'accepted' if s['accepted'] else 'refused'})" for s in sent]


def main():
    db, n, killed, cut, cut_name, *logs = sys.argv[1:]
    rows = sqlite3.connect(db).execute("SELECT id, state, attempt, worker, result FROM trials").fetchall()
    sent = sent_results(logs)
    errors = []
    if len(rows) != int(n):
        errors.append(f"{len(rows)} trials in the database, not {n}")
    by_id = {}
    for trial, state, attempt, worker, result in rows:
        by_id[trial] = attempt
        accepted = [s for s in sent if s["accepted"] and s["trial"] == trial]
        if state != "finished":
            errors.append(f"{trial}: {state}, not finished")
        elif len(accepted) != 1:
            errors.append(f"{trial}: {len(accepted)} accepted results in the workers' logs: {brief(accepted)}")
        else:
            s = accepted[0]
            if (s["worker"], s["attempt"]) != (worker, attempt):
                errors.append(f"{trial}: the database says {worker} attempt {attempt}, the log {brief([s])}")
            if json.loads(result) != s["result"]:
                errors.append(f"{trial}: the stored result differs from what {worker} sent")
    if by_id.get(killed, 0) < 2:
        errors.append(f"{killed} (its worker was killed) counted on attempt {by_id.get(killed)}")
    late = [s for s in sent if s["trial"] == cut and s["worker"].rsplit("-", 1)[0] == cut_name]
    if not any(not s["accepted"] for s in late):
        errors.append(f"{cut_name} sent no refused result for {cut} after its partition: {brief(late)}")
    if any(s["accepted"] for s in late):
        errors.append(f"{cut_name}'s result for {cut} was accepted after its lease was given away")
    if by_id.get(cut, 0) < 2:
        errors.append(f"{cut} (its worker was cut off) counted on attempt {by_id.get(cut)}")
    if errors:
        sys.exit("containers_check: " + "\n  ".join(errors))
    refused = sum(not s["accepted"] for s in sent)
    print(f"containers_check: {n} trials finished exactly once; {refused} late result(s) refused; "
          f"{killed} counted on attempt {by_id[killed]}, {cut} on attempt {by_id[cut]}")


if __name__ == "__main__":
    main()
