"""Train the SFT model (--stage sft: prompt + chosen, loss on the response only) or the reward
model (--stage rm: a scalar head on the base, Bradley-Terry loss on the pairs).

    python workflow_scripts/train_stage.py --stage sft --base results/tiny/models/base \
        --train results/tiny/data/pref/train.jsonl --test results/tiny/data/pref/test.jsonl \
        --params '{"lr": 1e-3, "epochs": 3, "batch_size": 32, "micro_batch_size": 32,
                   "warmup_ratio": 0.05, "max_len": 256, "max_gen_len": 64}' \
        --runtime '{"engine": {"logging_steps": 10, "checkpoint_every": 50}, "seed": 42}' \
        --work-dir results/tiny/work/sft --log-dir results/tiny/logs/tensorboard/sft \
        --model results/tiny/models/sft --metrics results/tiny/models/sft/metrics.json

Multi-GPU: the same arguments after `torchrun --nproc_per_node 8` (DeepSpeed ZeRO via --runtime).
A restarted job resumes from the last checkpoint in --work-dir.
"""

from exoflow import cli
from exoflow.config import Runtime


def make_parser():
    p = cli.ScriptParser(__doc__, launched=True)
    p.param("stage", "sft or rm", type=str, choices=["sft", "rm"])
    p.param("base", "base model folder or Hugging Face name", type=str)
    p.input("train", "preference records {prompt, chosen, rejected}")
    p.input("test", "test records (perplexity / RM accuracy)")
    p.param("params", "the config's sft or rm section, as JSON", type=str)
    p.param("runtime", "engine, dtype, lora and seed, as JSON", section=Runtime)
    p.param("work_dir", "Trainer checkpoints, for resuming", type=str)
    p.param("log_dir", "TensorBoard logs", type=str)
    p.output("model", "the model folder (or its config.json)")
    p.output("metrics", "metrics.json (written into the model folder)")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    import json

    from exoflow.config import RMParams, SFTParams
    from exoflow.modeling import folder_of

    if args.stage == "sft":
        from exoflow.sft import train_sft as train
    else:
        from exoflow.rm import train_rm as train
    params = {"sft": SFTParams, "rm": RMParams}[args.stage].from_json(args.params)
    metrics = train(args.base, args.train, args.test, folder_of(args.model), args.work_dir,
                    args.log_dir, params, args.runtime)
    print(json.dumps({k: v for k, v in metrics.items() if k != "loss_curve"}))


if __name__ == "__main__":
    cli.run(main)
