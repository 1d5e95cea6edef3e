"""Two results folders of the same preset, compared run by run: what a set of choices changes.

    .venv/bin/python benchmarks/fidelity_ablation.py results/tiny results/tiny_faithful

For every configuration (e.g. exo-rw_nc2) and checkpoint evaluated in both folders, with every
seed both trained (align.seeds, e.g. configs/seeds3.yaml), the difference B - A of the mean over
the report prompts (after eval.val_prompts) of the gold reward (synthetic source), the RM reward
(each folder's own RM: not one scale) and the exact KL to each folder's own SFT model, with the
study's 95 % paired bootstrap interval (exoflow.study.paired_bootstrap: seeds, then prompts, the
same test prompts in both). The SFT models (ckpt0) are compared the same way, over one seed.
Prints a Markdown table (docs/DIFFERENCES.md holds one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exoflow.io import read_json, read_records  # noqa: E402
from exoflow.study import _per_prompt, paired_bootstrap  # noqa: E402

METRICS = ("gold", "reward", "kl_exact", "length_tokens")


def evaluations(folder: Path) -> dict:
    """{(run, ckpt): records} of every evaluated checkpoint, and the SFT model's as ("sft", 0)."""
    out = {}
    for summary in sorted((folder / "eval").glob("*/ckpt*/reward.json")):
        s = read_json(summary)
        out[(s["run"], int(s["ckpt"]))] = read_records(summary.with_name("rewards.jsonl"))
    return out


def configuration_and_seed(run: str) -> tuple[str, str]:
    head, _, tail = run.rpartition("_s")
    return (head, tail) if head and tail.isdigit() else (run, "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path, help="results/<run_name> of the reference choices")
    ap.add_argument("b", type=Path, help="results/<run_name> of the other choices")
    ap.add_argument("--val-prompts", type=int, default=None,
                    help="report prompts start after these (default: the summary's split)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args(argv)
    ea, eb = evaluations(args.a), evaluations(args.b)
    val = args.val_prompts
    if val is None:
        import pandas as pd

        df = pd.read_csv(args.a / "summary.csv")
        val = int(df.loc[df["run"] == "sft", "report_prompts"].iloc[0])
        val = len(ea[("sft", 0)]) - val
    cells: dict = {}
    for (run, k), recs in ea.items():
        if (run, k) not in eb:
            continue
        if [r["prompt"] for r in recs] != [r["prompt"] for r in eb[(run, k)]]:
            sys.exit(f"error: {run}/ckpt{k}: the two folders evaluated other prompts")
        conf, seed = configuration_and_seed(run)
        cells.setdefault((conf, k), {})[seed] = (recs[val:], eb[(run, k)][val:])
    print(f"B = {args.b}, A = {args.a}; B - A over {len(ea[('sft', 0)]) - val} report prompts; "
          "95 % paired bootstrap over seeds and prompts\n")
    print("| configuration | ckpt | seeds | " + " | ".join(f"{m}: A | {m}: B - A [95 % CI]"
                                                       for m in METRICS) + " |")
    print("|---|---|---|" + "---|---|" * len(METRICS))
    for (conf, k), by_seed in sorted(cells.items(), key=lambda x: (x[0][0] != "sft", x[0])):
        seeds = sorted(by_seed)
        row = [conf, str(k), str(len(seeds))]
        for m in METRICS:
            if not all(m != "gold" or "gold" in r for s in seeds for r in by_seed[s][0]):
                row += ["", ""]
                continue
            A = np.stack([_per_prompt(by_seed[s][0], m) for s in seeds])
            B = np.stack([_per_prompt(by_seed[s][1], m) for s in seeds])
            res = paired_bootstrap(B, A, args.bootstrap, 0)
            row += [f"{A.mean():.3f}",
                    f"{res['diff']:+.3f} [{res['ci95_low']:+.3f}, {res['ci95_high']:+.3f}]"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
