"""summary.csv and summary.png from every checkpoint's evaluation (reward.json and the
rewards.jsonl beside it), on the report prompts, each run's checkpoint picked on the validation
prompts.

    python workflow_scripts/summarize.py --sft results/tiny/eval/sft/ckpt0/reward.json \
        --dataset results/tiny/eval/dataset/reward.json \
        --checkpoints results/tiny/eval/*/ckpt[1-9]*/reward.json \
        --runs '{"exo-rw_nc2": {"loss": "exo-rw", "data": "rm_labels", "num_contrastive": 2}}' \
        --val-prompts 128 --select-by gold --title tiny \
        --csv results/tiny/summary.csv --png results/tiny/summary.png
"""

from exoflow import cli


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("sft", "the SFT model's reward.json (ckpt0)")
    p.input("dataset", "eval/dataset/reward.json")
    p.input("checkpoints", "every checkpoint's reward.json", nargs="*", default=[])
    p.input("judge", "the judge's win_rate.json files (none: no judge columns)", nargs="*",
            default=[])
    p.input("rm_metrics", "the reward model's metrics.json (its test accuracy is checked "
            "against the shorter-wins baseline)", default=None)
    p.param("runs", "JSON {run: {configuration, seed, loss, data, num_contrastive}} (run "
            "order), or a JSON file")
    p.param("val_prompts", "the first N evaluated prompts pick each run's checkpoint", type=int)
    p.param("select_by", "the criterion that picks it", type=str,
            choices=["reward", "gold", "win_rate"])
    p.param("title", "the figure's title", type=str, default=None)
    p.output("csv", "summary.csv")
    p.output("png", "summary.png")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import pandas as pd

    from exoflow.io import read_json
    from exoflow.summary import write_summary

    runs = args.runs if isinstance(args.runs, dict) else read_json(args.runs)
    df = write_summary(args.sft, args.checkpoints, args.dataset, runs, args.csv, args.png,
                       title=args.title, val_prompts=args.val_prompts, select_by=args.select_by,
                       judge_jsons=args.judge,
                       rm_metrics=read_json(args.rm_metrics) if args.rm_metrics else None)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.to_string(index=False))


if __name__ == "__main__":
    cli.run(main)
