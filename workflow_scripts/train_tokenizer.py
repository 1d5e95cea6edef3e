"""Train a byte-level BPE tokenizer on the prompts and responses of a pairs file.

    python workflow_scripts/train_tokenizer.py --pairs results/tiny/data/pref/train.jsonl \
        --vocab-size 2048 --model-max-length 512 --tokenizer results/tiny/models/tokenizer
"""

from exoflow import cli


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("pairs", "pairs {prompt, chosen, rejected}")
    p.param("vocab_size", "the vocabulary's size (model.tokenizer_vocab_size)", type=int)
    p.param("model_max_length", "the longest sequence (model.scratch.max_position_embeddings)",
            type=int)
    p.output("tokenizer", "the tokenizer folder (or its tokenizer.json)")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.io import read_records
    from exoflow.modeling import folder_of, train_tokenizer

    out = folder_of(args.tokenizer)
    texts = [r[k] for r in read_records(args.pairs) for k in ("prompt", "chosen", "rejected")]
    tok = train_tokenizer(texts, args.vocab_size, out, args.model_max_length)
    print(f"vocabulary {len(tok)} from {len(texts)} texts -> {out}")


if __name__ == "__main__":
    cli.run(main)
