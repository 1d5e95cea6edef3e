"""Score sample (or preference) records with the reward model.

    # label: add "rewards" to SFT samples (the *-rw alignment data)
    python workflow_scripts/score.py --rm results/tiny/models/rm --mode label \
        --input results/tiny/data/sft_samples/train.jsonl --output results/tiny/data/rm_labels/train.jsonl \
        --batch-size 64 --max-len 256 --max-gen-len 64
    # eval: scored records + reward.json (mean, std, count, 95% interval; chosen/rejected and
    # accuracy for a preference file)
    python workflow_scripts/score.py --rm results/tiny/models/rm --mode eval \
        --input samples.jsonl --output rewards.jsonl --summary reward.json \
        --batch-size 64 --max-len 256 --max-gen-len 64
"""

import argparse
import json
import sys


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rm", required=True, help="reward model folder")
    p.add_argument("--input", required=True, help="sample or preference records")
    p.add_argument("--output", required=True, help="records with 'rewards', JSON Lines")
    p.add_argument("--summary", default=None, help="reward.json (eval mode)")
    p.add_argument("--mode", required=True, choices=["label", "eval"])
    p.add_argument("--batch-size", type=int, required=True, help="sequences per forward")
    p.add_argument("--max-len", type=int, required=True, help="prompt + response tokens")
    p.add_argument("--max-gen-len", type=int, required=True, help="response tokens kept")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16", "auto"])
    return p


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.mode == "eval" and not args.summary:
        parser.error("--mode eval needs --summary")
    import torch

    from exoflow.rewards import eval_file, label_file

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    sizes = dict(batch_size=args.batch_size, max_len=args.max_len, max_gen_len=args.max_gen_len,
                 dtype=args.dtype)
    try:
        if args.mode == "label":
            n = label_file(args.rm, args.input, args.output, **sizes)
            print(f"{n} records labelled -> {args.output}")
        else:
            summary = eval_file(args.rm, args.input, args.output, args.summary, **sizes)
            print(json.dumps(summary))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
