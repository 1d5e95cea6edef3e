"""Sample completions for every prompt of a record file from a causal LM.

    python workflow_scripts/sample.py --model results/tiny/models/sft \
        --input results/tiny/data/pref/train.jsonl --output results/tiny/data/sft_samples/train.jsonl \
        --params '{"num_return": 2, "temperature": 0.8, "top_k": 0, "max_new_tokens": 48,
                   "max_len": 256, "batch_size": 64}' --seed 42 --num-threads 2
"""

import argparse
import json
from pathlib import Path


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="causal LM folder (save_pretrained)")
    p.add_argument("--input", required=True, help="records with a 'prompt' key")
    p.add_argument("--output", required=True, help="{prompt, completions} records, JSON Lines")
    p.add_argument("--params", required=True,
                   help="the sample or eval config section, as JSON or a JSON file")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--num-prompts", type=int, default=None,
                   help="keep the first N prompts (default: params' num_prompts, else all)")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16", "auto"])
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import torch

    from exoflow.sampling import SampleParams, sample_file

    text = args.params if args.params.lstrip().startswith("{") else Path(args.params).read_text()
    params = SampleParams.from_dict(json.loads(text))
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    n = sample_file(args.model, args.input, args.output, params, args.seed,
                    num_prompts=args.num_prompts, dtype=args.dtype)
    print(f"{n} prompts x {params.num_return} completions -> {args.output}")


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
