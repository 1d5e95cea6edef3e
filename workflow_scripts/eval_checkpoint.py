"""Evaluate one checkpoint's samples: RM reward, win rate vs SFT, KL to SFT, length, gold.

    python workflow_scripts/eval_checkpoint.py \
        --samples results/tiny/samples/exo-rw_nc2/ckpt1/test.jsonl \
        --sft-samples results/tiny/samples/sft/ckpt0/test.jsonl \
        --rm results/tiny/models/rm --sft results/tiny/models/sft \
        --policy results/tiny/models/align/exo-rw_nc2/ckpt1 \
        --run exo-rw_nc2 --ckpt 1 \
        --scoring '{"max_prompt_len": 256, "score_batch_size": 64, "temperature": 0.8}' \
        --rm-layout '{"max_len": 256, "max_gen_len": 64}' --gold true --dtype null \
        --threads 1 --summary results/tiny/eval/exo-rw_nc2/ckpt1/reward.json \
        --rewards results/tiny/eval/exo-rw_nc2/ckpt1/rewards.jsonl

The SFT model itself is checkpoint 0: --policy equal to --sft and --samples equal to
--sft-samples (KL 0 and win rate 0.5 by construction).
"""

from exoflow import cli
from exoflow.config import EvalParams


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("samples", "the checkpoint's {prompt, completions}")
    p.input("sft_samples", "the SFT model's samples of the same prompts")
    p.input("rm", "the reward model folder (or its config.json)")
    p.input("sft", "the SFT model folder (the KL reference)")
    p.input("policy", "the checkpoint's folder")
    p.wildcard("run", "the run's name")
    p.wildcard("ckpt", "the checkpoint's number (0: the SFT model)", type=int)
    p.param("scoring", "the eval section's max_prompt_len, score_batch_size and temperature, as JSON",
            section=EvalParams)
    cli.add_scoring_args(p, "the models")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json

    from exoflow.evaluate import eval_checkpoint
    from exoflow.modeling import folder_of
    from exoflow.runtime import set_threads

    set_threads(args.threads)
    summary = eval_checkpoint(args.samples, args.sft_samples, folder_of(args.rm),
                              folder_of(args.sft), folder_of(args.policy), args.summary,
                              args.rewards, run=args.run, ckpt=args.ckpt,
                              scoring=args.scoring, rm_layout=args.rm_layout,
                              gold=bool(args.gold), dtype=args.dtype)
    print(json.dumps(summary))


if __name__ == "__main__":
    cli.run(main)
