"""Raw HH pairs of one split -> preprocessed pairs and their counts.

    python workflow_scripts/preprocess.py --split train \
        --data '{"source": "local", "path": "../shared/hh-rlhf-sample/harmless-base"}' \
        --seed 42 --output results/x/data/pref/train.jsonl --stats results/x/data/stats/train.json
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", required=True, choices=["train", "test"])
    p.add_argument("--data", required=True, help="the config's data section, as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="pairs, JSON Lines")
    p.add_argument("--stats", required=True, help="counts read/kept/dropped, JSON")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.data import prepare_split
    from exoflow.io import write_json, write_records

    pairs, stats = prepare_split(json.loads(args.data), args.split, args.seed)
    write_records(args.output, pairs)
    write_json(args.stats, stats)
    print(f"{args.split}: {json.dumps(stats)}")


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
