# Validation, path helpers and input functions; the plan itself (runs, checkpoints, file
# names, GPU prefixes) is exoflow.plan and every parameter is exoflow.config, both tested
# without Snakemake.
import json
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from exoflow.cli import script_parser, shell_args
from exoflow.codehash import code_hash
from exoflow.config.check import plan_or_exit
from exoflow.errors import ExoflowError
from exoflow.plan import rule_name
from exoflow.signals import forward_interrupt

SCRIPTS = Path(workflow.basedir) / "workflow_scripts"
PACKAGE = Path(workflow.basedir) / "exoflow"
SPLITS = ["train", "test"]
# SLURM sends training jobs SIGTERM 5 minutes before their time limit: they save a resume
# checkpoint and say where they resume from (exoflow/signals.py); ignored when not on SLURM.
SIGNAL_BEFORE_LIMIT = "'--signal=TERM@300'"


def relative(path):
    """``path`` relative to the working directory when inside it, else absolute: params hold
    it, and a checkout's absolute path must not re-run a finished workflow."""
    p = Path(path).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def python_command():
    """The Python that runs every script: the one Snakemake itself runs in (so
    `.venv/bin/snakemake ...` works without an activated venv), quoted for the shell; plain
    `python` (the rule's environment's) with per-rule conda envs (--sdm conda)."""
    methods = getattr(workflow.deployment_settings, "deployment_method", ()) or ()
    return (
        "python"
        if DeploymentMethod.CONDA in methods
        else shlex.quote(relative(sys.executable))
    )


# The config against schemas/config.schema.yaml (generated from exoflow/config/, where every
# default lives) and every check a dry run can make (exoflow.config.check): a bad config stops
# here with one line; --debug (or EXOFLOW_DEBUG=1) shows the traceback.
PLAN = plan_or_exit(config, sys.argv)
# Ctrl-C reaches every job (Snakemake alone waits for them unsignalled): exoflow/signals.py
forward_interrupt()
PLAN.python = python_command()
CFG = PLAN.cfg  # the config as exoflow.config objects, every default filled in
RESULTS = PLAN.results


def res(path):
    """A path under results/<run_name>/."""
    return PLAN.res(path)


def log(rule, name="log"):
    return f"{RESULTS}/logs/{rule}/{name}.log"


def bench(rule, name="bench"):
    return f"{RESULTS}/benchmarks/{rule}/{name}.tsv"


def as_json(value):
    """A params value for a script, as exoflow.cli.value reads it back: a string as it is,
    anything else (a parameter section, None, a bool) as JSON with sorted keys."""
    if isinstance(value, str):
        return value
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def code_of(name):
    """The hash of what workflow_scripts/<name>.py and every exoflow module it imports
    (transitively, imports inside functions included) do: a params value, so that Snakemake's
    params trigger re-runs exactly the rules whose code changed; comments, docstrings and
    formatting change nothing (exoflow.codehash)."""
    return code_hash(SCRIPTS / f"{name}.py", PACKAGE)


def run_script(name, prefix=None):
    """The shell line that runs workflow_scripts/<name>.py, ``<prefix> <script>``, then
    every argument the script declares (exoflow.cli.ScriptParser), each read from the rule's
    input, output, params or wildcards of the same name, so that a rule and its script cannot
    drift; the log gets stdout and stderr. ``prefix``: the Python (and launcher) to run it.
    """
    path = SCRIPTS / f"{name}.py"
    words = shell_args(script_parser(path))
    return (
        f"{PLAN.python if prefix is None else prefix} {shlex.quote(relative(path))} "
        f"{words} > {{log:q}} 2>&1"
    )


# ---- input functions -------------------------------------------------------------------------


def base_model_arg(wildcards, input):
    """The folder (or hub name) SFT and RM start from."""
    return (
        relative(PLAN.base_model())
        if Path(PLAN.base_model()).exists()
        else PLAN.base_model()
    )


def base_model_input():
    """The base model's files (exoflow.plan.Plan.base_model_inputs)."""
    return [relative(p) for p in PLAN.base_model_inputs()]


def ckpt_model(wildcards):
    return PLAN.ckpt_model(wildcards.run, wildcards.ckpt)


def judge_inputs(wildcards):
    try:
        return PLAN.judge_all_targets()
    except ExoflowError as e:  # no judge.base_url: the dry run stops with one line
        sys.exit(f"error: {e}")
