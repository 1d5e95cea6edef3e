"""RM (and gold) rewards of the dataset's own chosen and rejected responses.

    python workflow_scripts/eval_dataset.py --rm results/tiny/models/rm \
        --input results/tiny/data/pref/test.jsonl --num-prompts 128 \
        --output results/tiny/eval/dataset/reward.json \
        --rewards results/tiny/eval/dataset/rewards.jsonl \
        --params '{"score_batch_size": 64}' \
        --rm-max-len 256 --rm-max-gen-len 64 --gold --num-threads 1
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rm", required=True, help="reward model folder")
    p.add_argument("--input", required=True, help="{prompt, chosen, rejected} records")
    p.add_argument("--num-prompts", type=int, default=None, help="the first N records; default all")
    p.add_argument("--output", required=True, help="reward.json")
    p.add_argument("--rewards", required=True, help="per-prompt rewards, JSON Lines")
    p.add_argument("--params", required=True,
                   help="the eval config section (sizes), as JSON or a JSON file")
    p.add_argument("--rm-max-len", type=int, required=True, help="RM: prompt + response tokens")
    p.add_argument("--rm-max-gen-len", type=int, required=True, help="RM: response tokens kept")
    p.add_argument("--gold", action="store_true", help="also the synthetic gold reward")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16", "auto"])
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import torch

    from exoflow.evaluate import EvalParams, eval_dataset

    params = EvalParams.from_cli(args.params, args.rm_max_len, args.rm_max_gen_len)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    summary = eval_dataset(args.input, args.rm, args.output, args.rewards,
                           num_prompts=args.num_prompts, params=params, gold=args.gold,
                           dtype=args.dtype)
    print(json.dumps(summary))


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
