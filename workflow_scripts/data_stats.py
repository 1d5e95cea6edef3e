"""Per-split stats files -> one data/stats.json keyed by split.

    python workflow_scripts/data_stats.py \
        --splits results/tiny/data/stats/train.json results/tiny/data/stats/test.json \
        --stats results/tiny/data/stats.json
"""

from exoflow import cli


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("splits", "<split>.json files", nargs="+")
    p.output("stats", "stats.json")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from pathlib import Path

    from exoflow.io import read_json, write_json

    write_json(args.stats, {Path(f).stem: read_json(f) for f in args.splits})


if __name__ == "__main__":
    cli.run(main)
