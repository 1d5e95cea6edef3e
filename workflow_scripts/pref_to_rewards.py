"""Preference pairs -> {prompt, completions: [chosen, rejected], rewards: [1, 0]}.

    python workflow_scripts/pref_to_rewards.py --pairs results/tiny/data/pref/train.jsonl \
        --records results/tiny/data/p2r/train.jsonl
"""

from exoflow import cli


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("pairs", "pairs {prompt, chosen, rejected}")
    p.output("records", "alignment records, JSON Lines")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.hh import pair_to_rewards
    from exoflow.io import read_records, write_records

    n = write_records(args.records, (pair_to_rewards(r) for r in read_records(args.pairs)))
    print(f"{n} records -> {args.records}")


if __name__ == "__main__":
    cli.run(main)
