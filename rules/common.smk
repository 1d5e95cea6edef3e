# Validation, path helpers and input functions; the plan itself (runs, checkpoints, file
# names, GPU prefixes) is exoflow.plan, unit-tested without Snakemake.
import json
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from exoflow.codehash import code_hash
from exoflow.config_check import check_config
from exoflow.plan import Plan, as_json, rule_name


# set_default=False: the schema's defaults describe the dataclasses' (tests/test_schema.py); filled
# into align.runs entries they would override align.defaults.
validate(config, schema="../schemas/config.schema.yaml", set_default=False)
check_config(config)  # what the schema cannot say: model.init's folder, the checkpoint grid


def relative(path):
    """``path`` relative to the working directory when inside it, else absolute: params hold
    it, and a checkout's absolute path must not re-run a finished workflow."""
    p = Path(path).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def code_of(name):
    """The hash of what workflow_scripts/<name>.py and every exoflow module it imports
    (transitively, imports inside functions included) do: a params value, so that Snakemake's
    params trigger re-runs exactly the rules whose code changed; comments, docstrings and
    formatting change nothing (exoflow.codehash)."""
    return code_hash(SCRIPTS / f"{name}.py", PACKAGE)


def python_command():
    """The Python that runs every script: the one Snakemake itself runs in (so
    `.venv/bin/snakemake ...` works without an activated venv), quoted for the shell; plain
    `python` (the rule's environment's) with per-rule conda envs (--sdm conda)."""
    methods = getattr(workflow.deployment_settings, "deployment_method", ()) or ()
    return "python" if DeploymentMethod.CONDA in methods else shlex.quote(relative(sys.executable))


PYTHON = python_command()
PLAN = Plan(config, python=PYTHON)
RESULTS = PLAN.results
SCRIPTS = Path(workflow.basedir) / "workflow_scripts"
PACKAGE = Path(workflow.basedir) / "exoflow"
SPLITS = ["train", "test"]


def res(path):
    """A path under results/<run_name>/."""
    return PLAN.res(path)


def log(rule, name="log"):
    return f"{RESULTS}/logs/{rule}/{name}.log"


def bench(rule, name="bench"):
    return f"{RESULTS}/benchmarks/{rule}/{name}.tsv"


def script(name):
    """workflow_scripts/<name>.py (relative to the working directory when inside it): a params
    value, not an input, so that only a change of what it does (code_of) re-runs its rule."""
    return relative(SCRIPTS / f"{name}.py")


def command(name):
    """The shell words that run workflow_scripts/<name>.py with PYTHON, quoted."""
    return f"{PYTHON} {shlex.quote(script(name))}"


# ---- input functions -------------------------------------------------------------------------


def data_params(wildcards):
    return as_json(PLAN.data_params(wildcards.split))


def base_model_arg(wildcards, input):
    """The folder (or hub name) SFT and RM start from."""
    return relative(PLAN.base_model()) if Path(PLAN.base_model()).exists() else PLAN.base_model()


def base_model_input():
    """The base model's files (exoflow.plan.Plan.base_model_inputs)."""
    return [relative(p) for p in PLAN.base_model_inputs()]


def ckpt_model(wildcards):
    return PLAN.ckpt_model(wildcards.run, wildcards.k)


def ckpt_step(wildcards):
    return PLAN.ckpt_step(wildcards.run, wildcards.k)


def parent_of(name, kind="output"):
    """A params function: the folder of input/output ``name`` (a model's config.json)."""
    if kind == "output":
        return lambda wildcards, output: str(Path(output[name]).parent)
    return lambda wildcards, input: str(Path(input[name]).parent)
