"""Reference log-probs of every candidate of an alignment data set, computed once.

    python workflow_scripts/precompute_ref.py --reference results/tiny/models/sft \
        --data results/tiny/data/rm_labels/train.jsonl \
        --output results/tiny/data/ref_logps/rm_labels_t0.8_l256_g64.jsonl \
        --temp 0.8 --max-len 256 --max-gen-len 64 --batch-size 64 \
        --engine '{"deepspeed": null, "gpus": 0, "dtype": "fp32", "seed": 42}'

--engine is the alignment runs' engine: the reference runs in the precision they train in.
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="reference model folder (the SFT model)")
    p.add_argument("--data", required=True, help="alignment records {prompt, completions, rewards}")
    p.add_argument("--output", required=True, help="the cache (.jsonl: settings line + K per record)")
    p.add_argument("--temp", type=float, required=True, help="tau: log-probs of logits / tau")
    p.add_argument("--max-len", type=int, required=True, help="prompt + response tokens")
    p.add_argument("--max-gen-len", type=int, required=True, help="response tokens kept")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward")
    p.add_argument("--engine", default="{}", help="config['engine'] + dtype + seed, JSON")
    p.add_argument("--code-hash", default=None,
                   help="hash of the code computing the values, recorded in the cache")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.engine import EngineParams
    from exoflow.refcache import precompute_ref

    engine = EngineParams.from_dict(json.loads(args.engine))
    settings = precompute_ref(args.reference, args.data, args.output, args.temp, args.max_len,
                              args.max_gen_len, args.batch_size, engine, code=args.code_hash)
    print(json.dumps(settings))


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
