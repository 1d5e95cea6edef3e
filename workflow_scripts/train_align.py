"""EXO / DPO alignment of the SFT policy; checkpoints ckpt1..ckptn every save_every steps.

    python workflow_scripts/train_align.py --policy results/tiny/models/sft \
        --train results/tiny/data/rm_labels/train.jsonl \
        --ref-logps results/tiny/data/ref_logps/rm_labels_t0.8_l256_g64.jsonl \
        --out results/tiny/models/align/exo-rw_nc2 --work-dir results/tiny/work/align/exo-rw_nc2 \
        --log-dir results/tiny/logs/tensorboard/align/exo-rw_nc2 \
        --params '{"loss": "exo-rw", "data": "rm_labels", "lr": 1e-4, "batch_size": 32,
                   "micro_batch_size": 32, "max_steps": 60, "save_every": 20, "max_len": 256,
                   "max_gen_len": 64}' \
        --engine '{"deepspeed": null, "gpus": 0, "gradient_checkpointing": false,
                   "num_threads": null, "logging_steps": 10, "checkpoint_every": 50,
                   "dtype": "fp32", "seed": 42}'

Without --ref-logps the reference model (--reference, default --policy) runs in every step.
Multi-GPU: the same arguments after `torchrun --nproc_per_node 8` (DeepSpeed ZeRO via --engine).
A restarted job resumes from the last checkpoint in --work-dir.
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="the initial policy (SFT model folder)")
    p.add_argument("--train", required=True, help="records {prompt, completions, rewards}")
    p.add_argument("--ref-logps", default=None, help="reference log-prob cache (precompute_ref)")
    p.add_argument("--ref-code-hash", default=None,
                   help="the code hash the cache must record (precompute_ref's); default: unchecked")
    p.add_argument("--reference", default=None, help="reference model, when no cache (default: --policy)")
    p.add_argument("--out", required=True, help="folder for ckpt<k>/ and train_metrics.json")
    p.add_argument("--work-dir", required=True, help="Trainer checkpoints, for resuming")
    p.add_argument("--log-dir", required=True, help="TensorBoard logs")
    p.add_argument("--params", required=True, help="the run's resolved align params, JSON")
    p.add_argument("--engine", required=True, help="config['engine'] + dtype + seed, JSON")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.align import AlignParams, train_align
    from exoflow.engine import EngineParams

    params = AlignParams.from_dict(json.loads(args.params))
    engine = EngineParams.from_dict(json.loads(args.engine))
    metrics = train_align(args.policy, args.train, args.out, args.work_dir, args.log_dir,
                          params, engine, ref_cache=args.ref_logps, reference=args.reference,
                          ref_code=args.ref_code_hash)
    print(json.dumps({k: v for k, v in metrics.items() if k != "loss_curve"}))


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
