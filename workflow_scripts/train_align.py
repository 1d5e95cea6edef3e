"""EXO / DPO alignment of the SFT policy; checkpoints ckpt1..ckptn (exoflow.schedule).

    python workflow_scripts/train_align.py --policy results/tiny/models/sft \
        --train results/tiny/data/rm_labels/train.jsonl \
        --ref-logps results/tiny/data/ref_logps/rm_labels_t0.8_l256_g64_e1.jsonl \
        --align '{"loss": "exo-rw", "data": "rm_labels", "lr": 1e-4, "batch_size": 32,
                  "micro_batch_size": 32, "max_steps": 60, "save_every": 20, "max_len": 256,
                  "max_gen_len": 64}' \
        --runtime '{"engine": {"logging_steps": 10, "checkpoint_every": 50}, "seed": 42}' \
        --work-dir results/tiny/work/align/exo-rw_nc2 \
        --log-dir results/tiny/logs/tensorboard/align/exo-rw_nc2 \
        --metrics results/tiny/models/align/exo-rw_nc2/metrics.json

ckpt<k>/ are written beside --metrics. Without --ref-logps the reference model (--reference,
default --policy) runs in every step. Multi-GPU: the same arguments after
`torchrun --nproc_per_node 8` (DeepSpeed ZeRO via --runtime). A restarted job resumes from the
last checkpoint in --work-dir.
"""

from exoflow import cli
from exoflow.config import AlignParams, Runtime


def make_parser():
    p = cli.ScriptParser(__doc__, launched=True)
    p.input("policy", "the initial policy: the SFT model folder (or its config.json)")
    p.input("train", "records {prompt, completions, rewards}")
    p.input("ref_logps", "the reference log-prob cache (precompute_ref); none: run the "
            "reference in every step", nargs="?", default=None)
    p.param("ref_code", "the code hash the cache must record (precompute_ref's); null: "
            "unchecked", default=None)
    p.add_argument("--reference", default=None,
                   help="the reference model when there is no cache (default: --policy)")
    p.param("align", "the run's resolved align parameters, as JSON", section=AlignParams)
    p.param("runtime", "engine, dtype, lora and the run's seed, as JSON", section=Runtime)
    p.param("work_dir", "Trainer checkpoints, for resuming", type=str)
    p.param("log_dir", "TensorBoard logs", type=str)
    p.output("metrics", "metrics.json; ckpt<k>/ beside it")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json
    from pathlib import Path

    from exoflow.align import train_align
    from exoflow.modeling import folder_of

    metrics = train_align(folder_of(args.policy), args.train, Path(args.metrics).parent,
                          args.work_dir, args.log_dir, args.align, args.runtime,
                          ref_cache=args.ref_logps or None,
                          reference=folder_of(args.reference) if args.reference else None,
                          ref_code=args.ref_code)
    print(json.dumps({k: v for k, v in metrics.items() if k != "loss_curve"}))


if __name__ == "__main__":
    cli.run(main)
