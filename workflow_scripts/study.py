"""study.csv, compare.csv and study.png: every configuration across its seeds, and the paired
differences named in study.compare (exoflow.study).

    python workflow_scripts/study.py --sft results/tiny/eval/sft/ckpt0/reward.json \
        --checkpoints results/tiny/eval/*/ckpt[1-9]*/reward.json \
        --runs '{"exo-rw_nc2": {"configuration": "exo-rw_nc2", "seed": 42, "loss": "exo-rw",
                 "data": "rm_labels", "num_contrastive": 2}, ...}' \
        --compare '[["exo-rw_nc2", "dpo-rw_nc2"]]' --val-prompts 128 --select-by gold \
        --bootstrap 2000 --seed 42 --title tiny --csv results/tiny/study/study.csv \
        --comparisons results/tiny/study/compare.csv --png results/tiny/study/study.png
"""

from exoflow import cli


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("sft", "the SFT model's reward.json (ckpt0)")
    p.input("checkpoints", "every checkpoint's reward.json", nargs="*", default=[])
    p.input("judge", "the judge's win_rate.json files (none: no judge columns)", nargs="*",
            default=[])
    p.param("runs", "JSON {run: {configuration, seed, loss, data, num_contrastive}}")
    p.param("compare", "JSON [[a, b], ...] of configurations", default=[])
    p.param("val_prompts", "the first N evaluated prompts pick each run's checkpoint", type=int)
    p.param("select_by", "the criterion that picks it", type=str,
            choices=["reward", "gold", "win_rate"])
    p.param("bootstrap", "bootstrap resamples", type=int)
    p.param("seed", "seed of the bootstrap draws", type=int)
    p.param("title", "the figure's title", type=str, default=None)
    p.output("csv", "study.csv (compare.csv and study.png beside it)")
    p.output("comparisons", "compare.csv")
    p.output("png", "study.png")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from pathlib import Path

    import pandas as pd

    from exoflow.study import write_study

    study, compare = write_study(args.sft, args.checkpoints, args.runs,
                                 [tuple(p) for p in args.compare], Path(args.csv).parent,
                                 args.val_prompts, args.select_by, args.bootstrap, args.seed,
                                 args.title, args.judge)
    with pd.option_context("display.width", 220, "display.max_columns", 40):
        print(study.to_string(index=False))
        print(compare.to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
