import json
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = f"results/{config['run_name']}"
SCRIPTS = Path(workflow.basedir) / "workflow_scripts"
SPLITS = ["train", "test"]


wildcard_constraints:
    split="train|test",


def res(path):
    """A path under results/<run_name>/."""
    return f"{RESULTS}/{path}"


def log(rule, name="log"):
    return f"{RESULTS}/logs/{rule}/{name}.log"


def bench(rule, name="bench"):
    return f"{RESULTS}/benchmarks/{rule}/{name}.tsv"


def script(name):
    return str(SCRIPTS / f"{name}.py")


PACKAGE = Path(workflow.basedir) / "exoflow"


def code(*modules):
    """exoflow modules a rule's script runs, as inputs: editing one re-runs the rules that
    use it (Snakemake tracks the code of run:/script: rules only, not of shell commands)."""
    return [str(PACKAGE / f"{m}.py") for m in modules]


def as_json(obj):
    """A config section as one JSON word for a script's command line (use with :q)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def data_params(wildcards):
    """The data section as one split sees it, so that changing data.max_train does not
    re-run the test split (and everything downstream of it)."""
    d = dict(config["data"])
    other = "test" if wildcards.split == "train" else "train"
    d.pop(f"max_{other}", None)
    if d["source"] == "synthetic":
        syn = dict(d.get("synthetic") or {})
        syn.pop(f"num_{other}", None)
        d["synthetic"] = syn
    else:
        d.pop("synthetic", None)
    return as_json(d)


def is_scratch():
    return config["model"]["init"] == "scratch"


def base_model_arg(wildcards, input):
    """The folder (or hub name) SFT and RM start from."""
    return str(Path(input.base[0]).parent) if is_scratch() else config["model"]["init"]


def base_model_input():
    return [res("models/base/config.json")] if is_scratch() else []


def engine_params():
    return as_json(dict(config["engine"], dtype=config["model"]["dtype"], seed=config["seed"]))


def train_launcher():
    """Multi-process training when the job has more than one GPU. torchrun, not the
    deepspeed launcher: that one drops CUDA_VISIBLE_DEVICES (so it would ignore the GPUs
    SLURM or the lock pool gave the job) and always binds port 29500. The Trainer still
    runs DeepSpeed ZeRO from engine.deepspeed."""
    n = int(config["engine"].get("gpus") or 0)
    return "python" if n <= 1 else f"torchrun --standalone --nproc_per_node {n}"


def gpus():
    return int(config["engine"].get("gpus") or 0)


def data_targets():
    return [res(f"data/{kind}/{s}.jsonl") for kind in ("pref", "p2r") for s in SPLITS] + [
        res("data/stats.json")
    ]


def model_targets():
    return [res("models/sft/config.json"), res("models/rm/config.json")]


def label_targets():
    return [res(f"data/rm_labels/{s}.jsonl") for s in SPLITS]


def all_targets():
    return data_targets() + model_targets() + label_targets() + eval_all_targets()


# ---- evaluation (rules/eval.smk) -------------------------------------------------------


def is_synthetic():
    return config["data"]["source"] == "synthetic"


def eval_checkpoints(run):
    """The evaluated checkpoints of a run: 1..min(eval.checkpoints, its checkpoint count)."""
    n = min(int(config["eval"].get("checkpoints", 0)), num_checkpoints(run))
    return list(range(1, n + 1))


def eval_run_regex():
    """The run wildcard of samples/ and eval/: sft or an alignment run."""
    import re

    return "|".join(re.escape(r) for r in ["sft", *config["align"]["runs"]])


def ckpt_step(run, k):
    """The optimizer step of checkpoint k of a run (0 for the SFT model)."""
    return 0 if run == "sft" else int(k) * run_params(run)["save_every"]


def ckpt_model(wildcards):
    """config.json of the model behind samples/<run>/ckpt<k>: SFT for sft/ckpt0, else the
    run's checkpoint k (1..its checkpoint count)."""
    run, k = wildcards.run, int(wildcards.k)
    if run == "sft":
        if k != 0:
            raise ValueError(f"sft/ckpt{k}: the SFT model is checkpoint 0 only (sft/ckpt0)")
        return res("models/sft/config.json")
    n = num_checkpoints(run)
    if not 1 <= k <= n:
        raise ValueError(f"{run}/ckpt{k}: run {run} has checkpoints ckpt1..ckpt{n} "
                         "(its step 0 is the SFT model: sft/ckpt0)")
    return ckpt_config(run, k)


def eval_sample_params():
    """The eval section as sample.py takes it (without the keys that do not change samples)."""
    drop = ("checkpoints", "score_batch_size")
    return as_json({k: v for k, v in config["eval"].items() if k not in drop})


def eval_score_params():
    """The sizes of the scoring and log-prob passes of eval_checkpoint."""
    keys = ("max_len", "score_batch_size")
    return as_json({k: config["eval"][k] for k in keys if k in config["eval"]})


def eval_num_prompts_arg():
    n = config["eval"].get("num_prompts")
    return f"--num-prompts {int(n)}" if n else ""


def eval_run_meta():
    """{run: {loss, data, num_contrastive}} in config order, for the summary."""
    meta = {}
    for run in config["align"]["runs"]:
        p = run_params(run)
        meta[run] = {"loss": p["loss"], "data": p["data"],
                     "num_contrastive": p.get("num_contrastive", 2)}
    return json.dumps(meta, separators=(",", ":"))  # not as_json: keep the run order


def eval_checkpoint_targets():
    return [res(f"eval/{run}/ckpt{k}/reward.json")
            for run in config["align"]["runs"] for k in eval_checkpoints(run)]


def eval_all_targets():
    """The summary and every file it is made from: Snakemake does not re-make a missing
    intermediate file while what was made from it is up to date, so a deleted checkpoint
    evaluation is only redone (and the summary with it) when it is itself a target."""
    return [res("summary.csv"), res("summary.png"), res("eval/sft/ckpt0/reward.json"),
            res("eval/dataset/reward.json"), *eval_checkpoint_targets()]


def gpu_prefix(n):
    """Shell prefix giving a job `n` GPUs of its own on a workstation: exoflow.gpus takes `n`
    free devices from a file-lock pool, sets CUDA_VISIBLE_DEVICES and runs the command ('' when
    n is 0; unchanged where CUDA_VISIBLE_DEVICES is already set, e.g. by SLURM).
    Use at the very start of a rule's shell: "{params.gpu}OMP_NUM_THREADS=... python ..."."""
    n = int(n or 0)
    return f"python -m exoflow.gpus run --n {n} -- " if n > 0 else ""


# ---- alignment (rules/align.smk) ---------------------------------------------------------


def align_runs():
    """The alignment run names, in config order."""
    return list(config["align"]["runs"])


def run_params(run):
    """A run's resolved parameters (a dict): align.defaults updated with its entry."""
    return dict(config["align"]["defaults"], **config["align"]["runs"][run])


def num_checkpoints(run):
    p = run_params(run)
    return p["max_steps"] // p["save_every"]


def ckpt_config(run, k):
    """config.json of checkpoint k (1..num_checkpoints(run)) of an alignment run."""
    return res(f"models/align/{run}/ckpt{k}/config.json")


def align_ckpt_configs(run):
    return [ckpt_config(run, k) for k in range(1, num_checkpoints(run) + 1)]


def align_metrics(run):
    return res(f"models/align/{run}/train_metrics.json")


def align_data(run):
    """The training records of a run: data/<rm_labels|p2r>/train.jsonl."""
    return res(f"data/{run_params(run)['data']}/train.jsonl")


def align_work_dir(run):
    return res(f"work/align/{run}")


def align_tensorboard_dir(run):
    return res(f"logs/tensorboard/align/{run}")


def precompute_ref():
    return bool(config["align"].get("precompute_ref", True))


def ref_cache_path(run):
    """The reference log-prob cache a run reads; runs with the same data, temp and truncation
    share it. The temp is written with repr() so that the file name gives back the float."""
    p = run_params(run)
    return res(f"data/ref_logps/{p['data']}_t{float(p['temp'])!r}_l{int(p['max_len'])}"
               f"_g{int(p['max_gen_len'])}.jsonl")


def ref_engine_params():
    """The engine keys that set the precision the alignment runs train in (and so the one
    the reference log-probs are computed in); the others would only cause re-runs."""
    e = config["engine"]
    return as_json({"deepspeed": e.get("deepspeed"), "gpus": min(gpus(), 1),
                    "dtype": config["model"]["dtype"]})


def ref_cache_inputs(run):
    """[the cache] with align.precompute_ref, else [] (the trainer runs the reference)."""
    return [ref_cache_path(run)] if precompute_ref() else []


def train_align_rule_name(run):
    """train_align_<run> with the characters a rule name cannot hold replaced by _."""
    import re

    name = re.sub(r"\W", "_", run)
    return f"train_align_{name}"


def align_run_regex():
    import re

    return "|".join(re.escape(r) for r in align_runs())


def align_data_regex():
    import re

    return "|".join(sorted({re.escape(run_params(r)["data"]) for r in align_runs()}))


def align_targets():
    """Every run's checkpoints and train_metrics.json."""
    return [f for run in align_runs() for f in [*align_ckpt_configs(run), align_metrics(run)]]
