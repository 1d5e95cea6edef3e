"""Train the SFT model (--stage sft: prompt + chosen, loss on the response only) or the reward
model (--stage rm: a scalar head on the base, Bradley-Terry loss on the pairs).

    python workflow_scripts/train_stage.py --stage sft --base results/tiny/models/base \
        --train results/tiny/data/pref/train.jsonl --test results/tiny/data/pref/test.jsonl \
        --out results/tiny/models/sft --work-dir results/tiny/work/sft \
        --log-dir results/tiny/logs/tensorboard/sft \
        --params '{"lr": 1e-3, "epochs": 3, "batch_size": 32, "micro_batch_size": 32,
                   "warmup_ratio": 0.05, "max_len": 256, "max_gen_len": 64}' \
        --engine '{"deepspeed": null, "gpus": 0, "gradient_checkpointing": false,
                   "num_threads": null, "logging_steps": 10, "checkpoint_every": 50,
                   "dtype": "fp32", "seed": 42}'

Multi-GPU: the same arguments after `torchrun --nproc_per_node 8` (DeepSpeed ZeRO via --engine).
A restarted job resumes from the last checkpoint in --work-dir.
"""

import argparse
import json


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", required=True, choices=["sft", "rm"])
    p.add_argument("--base", required=True, help="base model folder or Hugging Face name")
    p.add_argument("--train", required=True, help="preference records {prompt, chosen, rejected}")
    p.add_argument("--test", required=True, help="test records (perplexity / RM accuracy)")
    p.add_argument("--out", required=True, help="model folder (save_pretrained + metrics.json)")
    p.add_argument("--work-dir", required=True, help="Trainer checkpoints, for resuming")
    p.add_argument("--log-dir", required=True, help="TensorBoard logs")
    p.add_argument("--params", required=True, help="config['sft'] or config['rm'], JSON")
    p.add_argument("--engine", required=True, help="config['engine'] + dtype + seed, JSON")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from exoflow.engine import EngineParams

    if args.stage == "sft":
        from exoflow.sft import SFTParams as Params
        from exoflow.sft import train_sft as train
    else:
        from exoflow.rm import RMParams as Params
        from exoflow.rm import train_rm as train
    params = Params.from_dict(json.loads(args.params))
    engine = EngineParams.from_dict(json.loads(args.engine))
    metrics = train(args.base, args.train, args.test, args.out, args.work_dir, args.log_dir,
                    params, engine)
    print(json.dumps({k: v for k, v in metrics.items() if k != "train_loss_curve"}))


if __name__ == "__main__":
    from exoflow import cli

    cli.run(main)
