"""Reference log-probs of every candidate of an alignment data set, computed once.

    python workflow_scripts/precompute_ref.py --reference results/tiny/models/sft \
        --data results/tiny/data/rm_labels/train.jsonl --temp 0.8 --max-len 256 \
        --max-gen-len 64 --eos 1 --batch-size 64 --runtime '{"dtype": "fp32"}' \
        --cache results/tiny/data/ref_logps/rm_labels_t0.8_l256_g64_e1.jsonl

--runtime is the alignment runs' engine and dtype: the reference runs in the precision they
train in. --visits v42s175b128r (align.ref_records: visited): only the records that runs of
seed 42, 175 steps of 128 prompts, random batches train on (exoflow/order.py); the others null.
"""

from exoflow import cli
from exoflow.config import Runtime


def make_parser():
    p = cli.ScriptParser(__doc__)
    p.input("reference", "the reference: the SFT model folder (or its config.json)")
    p.input("data", "alignment records {prompt, completions, rewards}")
    p.wildcard("temp", "tau: log-probs of logits / tau", type=float)
    p.wildcard("max_len", "prompt + response tokens", type=int)
    p.wildcard("max_gen_len", "response tokens kept", type=int)
    p.wildcard("eos", "1: EOS after the cut to max_gen_len; 0: before it (eos_after_cut)",
               type=int)
    p.param("batch_size", "sequences per forward", type=int)
    p.param("runtime", "the alignment runs' engine and dtype, as JSON", section=Runtime)
    p.param("code", "hash of the code computing the values, recorded in the cache",
            default=None)
    p.param("visits", "all (or none given), or the visits v<seed>s<steps>b<batch><g|r> of the "
            "runs that read the cache: only the records they train on", type=str, default=None)
    p.output("cache", "the cache (.jsonl: a settings line, then K values per record)")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json

    from exoflow.modeling import folder_of
    from exoflow.refcache import precompute_ref
    from exoflow.schedule import Visits

    settings = precompute_ref(folder_of(args.reference), args.data, args.cache, args.temp,
                              args.max_len, args.max_gen_len, args.batch_size, args.runtime,
                              code=args.code, eos_after_cut=bool(args.eos),
                              visits=(None if args.visits in (None, "all")
                                      else Visits.from_name(args.visits)))
    print(json.dumps(settings))


if __name__ == "__main__":
    cli.run(main)
