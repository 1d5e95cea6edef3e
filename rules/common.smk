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
    """Multi-process training when the job has more than one GPU."""
    n = int(config["engine"].get("gpus") or 0)
    if n <= 1:
        return "python"
    if config["engine"].get("deepspeed"):
        return f"deepspeed --num_gpus {n}"
    return f"torchrun --standalone --nproc_per_node {n}"


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
    return data_targets() + model_targets() + label_targets()
