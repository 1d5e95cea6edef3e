"""Preference pairs -> {prompt, completions: [chosen, rejected], rewards: [1, 0]}.

    python workflow_scripts/pref_to_rewards.py --input data/pref/train.jsonl \
        --output data/p2r/train.jsonl
"""

import argparse


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.hh import pair_to_rewards
    from exoflow.io import read_records, write_records

    n = write_records(args.output, (pair_to_rewards(r) for r in read_records(args.input)))
    print(f"{n} records -> {args.output}")


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
