"""Per-split stats files -> one data/stats.json keyed by split.

    python workflow_scripts/data_stats.py --inputs data/stats/train.json data/stats/test.json \
        --output data/stats.json
"""

import argparse
from pathlib import Path


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", nargs="+", required=True, help="<split>.json files")
    p.add_argument("--output", required=True)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.io import read_json, write_json

    write_json(args.output, {Path(f).stem: read_json(f) for f in args.inputs})


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
