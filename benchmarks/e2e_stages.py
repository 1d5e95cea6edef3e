"""End-to-end: each stage's wall time and share in a finished run, from the Snakemake
``benchmark:`` files, and the time of a dry run (``snakemake -n``) over that finished run.

    python benchmarks/e2e_stages.py [--run results/tiny] [--configfile configs/tiny.yaml]
        [--target eval_all] [--dry-runs 3] [--no-dry-run]

Reads ``<run>/benchmarks/<rule>/<name>.tsv`` (column ``s``: the job's wall seconds, also
``max_rss`` MiB and ``cpu_time``), sums the jobs of each rule, and gives each rule's share of
the summed job time. With ``--cores 2`` jobs overlap, so the sum exceeds the DAG's wall time;
the run's span is estimated from the files' modification times (a job's file is written when it
ends: span = last end - first (end - s)), valid when the run was one Snakemake invocation.
The dry run is timed in a subprocess (median of --dry-runs); it reads the run, writes nothing
but Snakemake's own metadata.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def read_benchmarks(run: Path) -> list[dict]:
    out = []
    for f in sorted((run / "benchmarks").rglob("*.tsv")):
        with open(f) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        rel = f.relative_to(run / "benchmarks")
        rule = rel.parts[0]
        for r in rows:  # one row per repeat of the job (usually 1)
            out.append({"rule": rule, "job": str(rel.with_suffix("")), "s": float(r["s"]),
                        "max_rss": float(r.get("max_rss") or "nan") if r.get("max_rss") not in ("-", None) else float("nan"),
                        "cpu_time": float(r["cpu_time"]) if r.get("cpu_time") not in ("-", None, "") else float("nan"),
                        "end": f.stat().st_mtime})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(C.ROOT / "results" / "tiny"))
    ap.add_argument("--configfile", default="configs/tiny.yaml")
    ap.add_argument("--target", default="eval_all")
    ap.add_argument("--dry-runs", type=int, default=3)
    ap.add_argument("--no-dry-run", action="store_true")
    a = ap.parse_args(argv)
    run = Path(a.run)
    jobs = read_benchmarks(run)
    if not jobs:
        raise SystemExit(f"{run}/benchmarks: no benchmark files; is the run finished?")
    total = sum(j["s"] for j in jobs)
    by_rule: dict[str, list[dict]] = {}
    for j in jobs:
        by_rule.setdefault(j["rule"], []).append(j)
    rows = []
    for rule, js in sorted(by_rule.items(), key=lambda kv: -sum(j["s"] for j in kv[1])):
        s = sum(j["s"] for j in js)
        rows.append([rule, len(js), f"{s:.1f}", f"{100 * s / total:.1f}%",
                     f"{max(j['s'] for j in js):.1f}",
                     f"{max(j['max_rss'] for j in js):.0f}",
                     f"{sum(j['cpu_time'] for j in js):.1f}"])
    rows.append(["(all jobs)", len(jobs), f"{total:.1f}", "100%", "", "", f"{sum(j['cpu_time'] for j in jobs):.1f}"])
    span = max(j["end"] for j in jobs) - min(j["end"] - j["s"] for j in jobs)
    print(f"# e2e_stages  run={run}  jobs={len(jobs)}")
    print(f"# machine: {C.machine()}")
    print(C.fmt_table(["rule (stage)", "jobs", "sum of job s", "share", "longest job s",
                       "max RSS MiB", "cpu s"], rows))
    print(f"# run span from the benchmark files' mtimes: {span:.0f} s "
          f"(sum of job times / span = {total / span:.2f} jobs running on average)")
    if a.no_dry_run:
        return
    cmd = ["snakemake", "-n", a.target, "--configfile", a.configfile, "--quiet"]
    ts, rc = [], 0
    for _ in range(a.dry_runs):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=C.ROOT, capture_output=True, text=True)
        ts.append(time.perf_counter() - t0)
        rc = rc or p.returncode
        tail = (p.stdout + p.stderr).strip().splitlines()[-3:]
    print()
    print(C.fmt_table(["dry run", "s (median)", "runs", "target", ""],
                      [[" ".join(cmd), f"{statistics.median(ts):.2f}", len(ts), "< 5 s",
                        "met" if statistics.median(ts) < 5 and rc == 0 else "MISSED"]]))
    print(f"# exit code {rc}; last lines: {' | '.join(tail)}")


if __name__ == "__main__":
    main()
