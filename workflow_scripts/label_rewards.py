"""Add the reward model's "rewards" to SFT sample records (the data of the *-rw alignment runs).

    python workflow_scripts/label_rewards.py --rm results/tiny/models/rm \
        --samples results/tiny/data/sft_samples/train.jsonl --batch-size 64 \
        --rm-layout '{"max_len": 256, "max_gen_len": 64}' --dtype null --threads 2 \
        --labels results/tiny/data/rm_labels/train.jsonl
"""

from exoflow import cli
from exoflow.config import LayoutParams


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("rm", "the reward model folder (or its config.json)")
    p.input("samples", "sample records {prompt, completions}")
    p.param("batch_size", "sequences per forward", type=int)
    p.param("rm_layout", "the RM's max_len and max_gen_len, as JSON", section=LayoutParams)
    p.param("dtype", "the precision to load the RM in (null: its own)", default=None)
    p.threads()
    p.output("labels", "the records with 'rewards', JSON Lines")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.modeling import folder_of
    from exoflow.rewards import label_file
    from exoflow.runtime import set_threads

    set_threads(args.threads)
    n = label_file(folder_of(args.rm), args.samples, args.labels, args.batch_size,
                   args.rm_layout, dtype=args.dtype)
    print(f"{n} records labelled -> {args.labels}")


if __name__ == "__main__":
    cli.run(main)
