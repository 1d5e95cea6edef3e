"""study.csv, compare.csv and study.png: every configuration across its seeds, and the paired
differences named in study.compare (exoflow.study).

    python workflow_scripts/study.py --sft results/tiny/eval/sft/ckpt0/reward.json \
        --checkpoints results/tiny/eval/*/ckpt[1-9]*/reward.json \
        --runs '{"exo-rw_nc2": {"configuration": "exo-rw_nc2", "seed": 42, "loss": "exo-rw",
                 "data": "rm_labels", "num_contrastive": 2}, ...}' \
        --compare '[["exo-rw_nc2", "dpo-rw_nc2"]]' --val-prompts 128 --select-by gold \
        --out results/tiny/study
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft", required=True, help="the SFT model's reward.json (ckpt0)")
    p.add_argument("--checkpoints", nargs="*", default=[], help="every checkpoint's reward.json")
    p.add_argument("--runs", required=True,
                   help="JSON {run: {configuration, seed, loss, data, num_contrastive}}")
    p.add_argument("--compare", default="[]", help="JSON [[a, b], ...] of configurations")
    p.add_argument("--val-prompts", type=int, default=0)
    p.add_argument("--select-by", default="reward", choices=["reward", "gold", "win_rate"])
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--out", required=True, help="folder for study.csv, compare.csv, study.png")
    p.add_argument("--title", default=None)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import pandas as pd

    from exoflow.study import write_study

    study, compare = write_study(args.sft, args.checkpoints, json.loads(args.runs),
                                 [tuple(p) for p in json.loads(args.compare)], args.out,
                                 args.val_prompts, args.select_by, args.bootstrap, args.seed,
                                 args.title)
    with pd.option_context("display.width", 220, "display.max_columns", 40):
        print(study.to_string(index=False))
        print(compare.to_string(index=False))


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
