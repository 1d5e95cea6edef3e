"""A local GGUF file (model.init: /path/model.gguf) as the base model folder SFT and RM start
from: dequantised to fp32 by transformers' GGUF loader, tokenizer from the file's metadata.

    python workflow_scripts/import_base_model.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --model results/smol_hh/models/base
"""

from exoflow import cli


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("gguf", "the .gguf file")
    p.output("model", "the model folder (or its config.json)")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json

    from exoflow.modeling import folder_of, import_gguf

    print(json.dumps(import_gguf(args.gguf, folder_of(args.model))))


if __name__ == "__main__":
    cli.run(main)
