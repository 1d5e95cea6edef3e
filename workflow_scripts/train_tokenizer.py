"""Train a byte-level BPE tokenizer on the prompts and responses of a pairs file.

    python workflow_scripts/train_tokenizer.py --input data/pref/train.jsonl \
        --vocab-size 2048 --output models/tokenizer
"""

import argparse


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="pairs {prompt, chosen, rejected}")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--model-max-length", type=int, default=2048)
    p.add_argument("--output", required=True, help="tokenizer folder")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.io import read_records
    from exoflow.modeling import train_tokenizer

    texts = [r[k] for r in read_records(args.input) for k in ("prompt", "chosen", "rejected")]
    tok = train_tokenizer(texts, args.vocab_size, args.output, args.model_max_length)
    print(f"vocabulary {len(tok)} from {len(texts)} texts -> {args.output}")


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
