"""Evaluate one checkpoint's samples: RM reward, win rate vs SFT, KL to SFT, length, gold.

    python workflow_scripts/eval_checkpoint.py \
        --samples results/tiny/samples/exo-rw_nc2/ckpt1/test.jsonl \
        --sft-samples results/tiny/samples/sft/ckpt0/test.jsonl \
        --rm results/tiny/models/rm --sft results/tiny/models/sft \
        --policy results/tiny/models/align/exo-rw_nc2/ckpt1 \
        --output results/tiny/eval/exo-rw_nc2/ckpt1/reward.json \
        --rewards results/tiny/eval/exo-rw_nc2/ckpt1/rewards.jsonl \
        --run exo-rw_nc2 --ckpt 1 --step 20 --gold \
        --params '{"max_len": 256, "score_batch_size": 64}' \
        --rm-max-len 256 --rm-max-gen-len 64 --num-threads 1

The SFT model itself is checkpoint 0: --policy equal to --sft and --samples equal to
--sft-samples (KL 0 and win rate 0.5 by construction).
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", required=True, help="the checkpoint's {prompt, completions}")
    p.add_argument("--sft-samples", required=True, help="the SFT model's samples, same prompts")
    p.add_argument("--rm", required=True, help="reward model folder")
    p.add_argument("--sft", required=True, help="SFT model folder (the KL reference)")
    p.add_argument("--policy", required=True, help="the checkpoint's folder")
    p.add_argument("--output", required=True, help="reward.json")
    p.add_argument("--rewards", required=True, help="per-prompt rewards, JSON Lines")
    p.add_argument("--run", required=True)
    p.add_argument("--ckpt", type=int, required=True)
    p.add_argument("--step", type=int, required=True)
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

    from exoflow.evaluate import EvalParams, eval_checkpoint

    params = EvalParams.from_cli(args.params, args.rm_max_len, args.rm_max_gen_len)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    summary = eval_checkpoint(args.samples, args.sft_samples, args.rm, args.sft, args.policy,
                              args.output, args.rewards, run=args.run, ckpt=args.ckpt,
                              step=args.step, params=params, gold=args.gold, dtype=args.dtype)
    print(json.dumps(summary))


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
