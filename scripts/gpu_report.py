"""Per-stage wall time, throughput and peak GPU memory of a finished run, from its own files.

    python scripts/gpu_report.py results/gpu_check

Reads ``benchmarks/<rule>/*.tsv`` (Snakemake's per-job wall time), ``logs/<rule>/*.log`` (the
``[exoflow] peak GPU memory`` line every script prints on a GPU, and the samplers' ``sampled N
prompts x n in T s`` line) and the training stages' metrics (optimizer steps, examples, world
size). Prints one Markdown table, a row per rule.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

PEAK = re.compile(r"\[exoflow\] peak GPU memory \(rank \d+\): ([\d.]+) GiB")
SAMPLED = re.compile(r"sampled (\d+) prompts x (\d+) in ([\d.]+)s")


def rule_of(path: Path, root: Path, kind: str) -> str:
    rule = path.relative_to(root / kind).parts[0]
    return "train_align" if rule.startswith("train_align") else rule


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    root = Path(argv[0])
    wall, jobs, peak, done = defaultdict(float), defaultdict(int), defaultdict(float), defaultdict(list)
    for tsv in sorted((root / "benchmarks").rglob("*.tsv")):
        with open(tsv) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows:
            r = rule_of(tsv, root, "benchmarks")
            wall[r] += float(rows[-1]["s"])
            jobs[r] += 1
    for log in sorted((root / "logs").rglob("*.log")):
        r = rule_of(log, root, "logs")
        text = log.read_text(errors="replace")
        for m in PEAK.finditer(text):
            peak[r] = max(peak[r], float(m.group(1)))
        for m in SAMPLED.finditer(text):
            done[r].append(f"{int(m.group(1)) * int(m.group(2)) / float(m.group(3)):.1f} seq/s")
    for stage in ("sft", "rm"):
        m = root / "models" / stage / "metrics.json"
        if m.exists():
            d = json.loads(m.read_text())
            s = wall.get(f"train_{stage}")
            if s:
                done[f"train_{stage}"].append(
                    f"{d['global_step'] / s:.2f} steps/s over the job (world size {d['run']['world_size']})")
    for m in sorted((root / "models" / "align").glob("*/metrics.json")):
        d = json.loads(m.read_text())
        done["train_align"].append(f"{m.parent.name}: {d['global_step']} steps")
    print("| rule | jobs | wall s (sum) | peak GPU GiB | throughput |")
    print("|------|------|--------------|--------------|------------|")
    for r in sorted(jobs, key=lambda k: -wall[k]):
        print(f"| {r} | {jobs[r]} | {wall[r]:.1f} | {peak[r]:.2f} | {'; '.join(done[r][:3])} |"
              if peak.get(r) else
              f"| {r} | {jobs[r]} | {wall[r]:.1f} | - | {'; '.join(done[r][:3])} |")
    print(f"| total | {sum(jobs.values())} | {sum(wall.values()):.1f} | {max(peak.values(), default=0):.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
