"""Reward model: a scalar head on the base model, Bradley-Terry loss on the preference pairs.

    python workflow_scripts/train_rm.py --base results/tiny/models/base \
        --train results/tiny/data/pref/train.jsonl --test results/tiny/data/pref/test.jsonl \
        --out results/tiny/models/rm --work-dir results/tiny/work/rm \
        --log-dir results/tiny/logs/tensorboard/rm \
        --params '{"lr": 5e-4, "epochs": 2, "batch_size": 32, "micro_batch_size": 32,
                   "warmup_ratio": 0.05, "max_len": 256, "max_gen_len": 64}' \
        --engine '{"deepspeed": null, "gpus": 0, "gradient_checkpointing": false,
                   "num_threads": null, "logging_steps": 10, "checkpoint_every": 50,
                   "dtype": "fp32", "seed": 42}'

Multi-GPU: the same arguments after `torchrun --nproc_per_node 8` (DeepSpeed ZeRO via --engine).
A restarted job resumes from the last checkpoint in --work-dir.
"""

import argparse
import json
import sys


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="base model folder or Hugging Face name")
    p.add_argument("--train", required=True, help="preference records {prompt, chosen, rejected}")
    p.add_argument("--test", required=True, help="test pairs (accuracy, margin)")
    p.add_argument("--out", required=True, help="model folder (save_pretrained + metrics.json)")
    p.add_argument("--work-dir", required=True, help="Trainer checkpoints, for resuming")
    p.add_argument("--log-dir", required=True, help="TensorBoard logs")
    p.add_argument("--params", required=True, help="config['rm'] as a JSON object")
    p.add_argument("--engine", required=True, help="config['engine'] + dtype + seed, JSON")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.engine import EngineParams, ParamsError
    from exoflow.rm import RMParams, train_rm

    try:  # bad parameters end the job with one line, not a traceback
        params = RMParams.from_dict(json.loads(args.params))
        engine = EngineParams.from_dict(json.loads(args.engine))
        metrics = train_rm(args.base, args.train, args.test, args.out, args.work_dir,
                           args.log_dir, params, engine)
    except (ParamsError, json.JSONDecodeError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps({k: v for k, v in metrics.items() if k != "train_loss_curve"}))


if __name__ == "__main__":
    main()
