"""Build the seeded scratch GPT-NeoX that SFT and RM both start from.

    python workflow_scripts/init_base_model.py --tokenizer models/tokenizer \
        --scratch '{"hidden_size": 128, "num_layers": 4, "num_heads": 4,
                    "max_position_embeddings": 512}' --seed 42 --output models/base
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--scratch", required=True, help="model.scratch as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="model folder (save_pretrained)")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.modeling import count_parameters, init_base_model, load_causal_lm

    init_base_model("scratch", args.output, args.tokenizer, json.loads(args.scratch), args.seed)
    print(f"{count_parameters(load_causal_lm(args.output)):,} parameters -> {args.output}")


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
