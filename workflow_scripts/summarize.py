"""summary.csv and summary.png from every checkpoint's evaluation (reward.json and the
rewards.jsonl beside it), on the report prompts, each run's checkpoint picked on the validation
prompts.

    python workflow_scripts/summarize.py --sft results/tiny/eval/sft/ckpt0/reward.json \
        --dataset results/tiny/eval/dataset/reward.json \
        --checkpoints results/tiny/eval/*/ckpt[1-9]*/reward.json \
        --runs '{"exo-rw_nc2": {"loss": "exo-rw", "data": "rm_labels", "num_contrastive": 2}}' \
        --val-prompts 128 --select-by gold \
        --csv results/tiny/summary.csv --png results/tiny/summary.png --title tiny
"""

import argparse
import json
from pathlib import Path


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft", required=True, help="the SFT model's reward.json (ckpt0)")
    p.add_argument("--dataset", required=True, help="eval/dataset/reward.json")
    p.add_argument("--checkpoints", nargs="*", default=[], help="every checkpoint's reward.json")
    p.add_argument("--runs", required=True,
                   help="JSON {run: {loss, data, num_contrastive}} (run order), or a JSON file")
    p.add_argument("--csv", required=True)
    p.add_argument("--png", required=True)
    p.add_argument("--title", default=None)
    p.add_argument("--val-prompts", type=int, default=0,
                   help="the first N evaluated prompts pick each run's checkpoint")
    p.add_argument("--select-by", default="reward", choices=["reward", "gold", "win_rate"])
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import pandas as pd

    from exoflow.summary import write_summary

    text = args.runs if args.runs.lstrip().startswith("{") else Path(args.runs).read_text()
    df = write_summary(args.sft, args.checkpoints, args.dataset, json.loads(text), args.csv,
                       args.png, title=args.title, val_prompts=args.val_prompts,
                       select_by=args.select_by)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.to_string(index=False))


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
