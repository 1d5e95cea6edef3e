"""Raw HH pairs of one split -> preprocessed pairs and their counts.

    python workflow_scripts/preprocess.py --split train \
        --data '{"source": "local", "path": "../shared/hh-rlhf-sample/harmless-base"}' \
        --seed 42 --pairs results/x/data/pref/train.jsonl --stats results/x/data/stats/train.json
"""

from exoflow import cli
from exoflow.config import DataParams


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.wildcard("split", "train or test", choices=["train", "test"])
    p.param("data", "the config's data section, as JSON", section=DataParams)
    p.param("seed", "the config's seed", type=int)
    p.output("pairs", "pairs {prompt, chosen, rejected}, JSON Lines")
    p.output("stats", "counts read / kept / dropped, JSON")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json

    from exoflow.data import prepare_split
    from exoflow.io import write_json, write_records

    pairs, stats = prepare_split(args.data, args.split, args.seed)
    write_records(args.pairs, pairs)
    write_json(args.stats, stats)
    print(f"{args.split}: {json.dumps(stats)}")


if __name__ == "__main__":
    cli.run(main)
