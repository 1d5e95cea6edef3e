"""Add the reward model's "rewards" to SFT sample records (the data of the *-rw alignment runs).

    python workflow_scripts/label_rewards.py --rm results/tiny/models/rm \
        --input results/tiny/data/sft_samples/train.jsonl \
        --output results/tiny/data/rm_labels/train.jsonl \
        --batch-size 64 --max-len 256 --max-gen-len 64
"""

import argparse


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rm", required=True, help="reward model folder")
    p.add_argument("--input", required=True, help="sample records {prompt, completions}")
    p.add_argument("--output", required=True, help="the records with 'rewards', JSON Lines")
    p.add_argument("--batch-size", type=int, required=True, help="sequences per forward")
    p.add_argument("--max-len", type=int, required=True, help="prompt + response tokens")
    p.add_argument("--max-gen-len", type=int, required=True, help="response tokens kept")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16", "auto"])
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import torch

    from exoflow.rewards import label_file

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    n = label_file(args.rm, args.input, args.output, batch_size=args.batch_size,
                   max_len=args.max_len, max_gen_len=args.max_gen_len, dtype=args.dtype)
    print(f"{n} records labelled -> {args.output}")


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
