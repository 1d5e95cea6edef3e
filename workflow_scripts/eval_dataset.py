"""RM (and gold) rewards of the dataset's own chosen and rejected responses.

    python workflow_scripts/eval_dataset.py --rm results/tiny/models/rm \
        --pairs results/tiny/data/pref/test.jsonl --num-prompts 256 --score-batch-size 64 \
        --rm-layout '{"max_len": 256, "max_gen_len": 64}' --gold true --dtype null \
        --threads 1 --summary results/tiny/eval/dataset/reward.json \
        --rewards results/tiny/eval/dataset/rewards.jsonl
"""

from exoflow import cli


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("rm", "the reward model folder (or its config.json)")
    p.input("pairs", "{prompt, chosen, rejected} records")
    p.param("num_prompts", "the first N records (null: all)", default=None)
    p.param("score_batch_size", "sequences per RM forward", type=int)
    cli.add_scoring_args(p, "the RM")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json

    from exoflow.evaluate import eval_dataset
    from exoflow.modeling import folder_of
    from exoflow.runtime import set_threads

    set_threads(args.threads)
    summary = eval_dataset(args.pairs, folder_of(args.rm), args.summary, args.rewards,
                           num_prompts=args.num_prompts, score_batch_size=args.score_batch_size,
                           rm_layout=args.rm_layout, gold=bool(args.gold), dtype=args.dtype)
    print(json.dumps(summary))


if __name__ == "__main__":
    cli.run(main)
