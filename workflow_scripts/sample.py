"""Sample completions for every prompt of a record file from a causal LM.

    python workflow_scripts/sample.py --model results/tiny/models/sft \
        --prompts results/tiny/data/pref/train.jsonl \
        --generation '{"num_return": 2, "temperature": 0.8, "top_k": 0, "max_new_tokens": 48,
                       "max_prompt_len": 256, "batch_size": 64}' --seed 42 --num-prompts null \
        --dtype null --threads 2 --samples results/tiny/data/sft_samples/train.jsonl
"""

from exoflow import cli
from exoflow.config import GenerationParams


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("model", "a causal LM folder (or its config.json)")
    p.input("prompts", "records with a 'prompt' key")
    p.param("generation", "how to sample (the sample or eval section), as JSON",
            section=GenerationParams)
    p.param("seed", "the config's seed", type=int)
    p.param("num_prompts", "the first N prompts (null: all)", default=None)
    p.param("subset", "then this many of them, drawn by the seed (null: all)", default=None)
    p.param("dtype", "the precision to load the model in (null: its own)", default=None)
    p.threads()
    p.output("samples", "{prompt, completions} records, JSON Lines")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.modeling import folder_of
    from exoflow.runtime import set_threads
    from exoflow.sampling import sample_file

    set_threads(args.threads)
    n = sample_file(folder_of(args.model), args.prompts, args.samples, args.generation,
                    args.seed, num_prompts=args.num_prompts, dtype=args.dtype,
                    subset=args.subset)
    print(f"{n} prompts x {args.generation.num_return} completions -> {args.samples}")


if __name__ == "__main__":
    cli.run(main)
