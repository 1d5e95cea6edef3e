"""LLM-judge win rates of one checkpoint against one baseline, both orders, on the report
prompts (exoflow.judge).

    python workflow_scripts/judge.py --evals results/tiny/eval/exo-rw_nc2/ckpt3/rewards.jsonl \
        --dataset results/tiny/eval/dataset/rewards.jsonl --run exo-rw_nc2 --ckpt 3 \
        --baseline sft --first 128 --cache results/tiny/judge/cache \
        --judge '{"base_url": "http://127.0.0.1:8000/v1", "model": "smol", "num_prompts": 16}' \
        --judgements results/tiny/judge/exo-rw_nc2/ckpt3/sft/judgements.jsonl \
        --summary results/tiny/judge/exo-rw_nc2/ckpt3/sft/win_rate.json
"""

from exoflow import cli
from exoflow.config import JudgeParams


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("evals", "the checkpoint's eval rewards.jsonl (its samples and the SFT model's)")
    p.input("dataset", "eval/dataset/rewards.jsonl (the chosen responses)")
    p.wildcard("run", "the run's name (sft: the SFT model)")
    p.wildcard("ckpt", "the checkpoint's number", type=int)
    p.wildcard("baseline", "sft or chosen", choices=["sft", "chosen"])
    p.param("first", "the first judged prompt's index (eval.val_prompts)", type=int)
    p.param("cache", "the folder of cached answers", type=str)
    p.param("judge", "the config's judge section, as JSON", section=JudgeParams)
    p.output("judgements", "per-prompt verdicts, JSON Lines")
    p.output("summary", "win_rate.json")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json

    from exoflow.judge import JudgeError, judge_checkpoint

    if not args.judge.base_url:
        raise JudgeError("judge.base_url is not set: name an OpenAI-compatible endpoint")
    summary = judge_checkpoint(args.evals, args.dataset, args.judgements, args.summary,
                               args.cache, run=args.run, ckpt=args.ckpt,
                               baseline=args.baseline, first=args.first, params=args.judge)
    print(json.dumps(summary))


if __name__ == "__main__":
    cli.run(main)
