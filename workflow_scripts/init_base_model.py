"""Build the seeded scratch GPT-NeoX that SFT and RM both start from.

    python workflow_scripts/init_base_model.py --tokenizer results/tiny/models/tokenizer \
        --scratch '{"hidden_size": 128, "num_layers": 4, "num_heads": 4,
                    "max_position_embeddings": 512}' --seed 42 --model results/tiny/models/base
"""

from exoflow import cli
from exoflow.config import ScratchParams


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("tokenizer", "the tokenizer folder (or its tokenizer.json)")
    p.param("scratch", "model.scratch, as JSON", section=ScratchParams)
    p.param("seed", "the config's seed", type=int)
    p.output("model", "the model folder (or its config.json)")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.modeling import folder_of, init_base_model, load_causal_lm, parameter_counts

    out = folder_of(args.model)
    init_base_model("scratch", out, folder_of(args.tokenizer), args.scratch, args.seed)
    n = parameter_counts(load_causal_lm(out))["total_params"]
    print(f"{n:,} parameters -> {out}")


if __name__ == "__main__":
    cli.run(main)
