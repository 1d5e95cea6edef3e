# Validation, path helpers and input functions; the plan itself (runs, checkpoints, file
# names, GPU prefixes) is exoflow.plan and every parameter is exoflow.params, both tested
# without Snakemake.
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.settings.types import DeploymentMethod

from exoflow.cli import script_parser, shell_args
from exoflow.codehash import code_hash
from exoflow.config_check import plan_or_exit
from exoflow.errors import ExoflowError
from exoflow.plan import rule_name
from exoflow.provenance import in_scope, stale_jobs
from exoflow.signals import forward_interrupt

SCRIPTS = Path(workflow.basedir) / "workflow_scripts"
PACKAGE = Path(workflow.basedir) / "exoflow"
SPLITS = ["train", "test"]


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


# The config against schemas/config.schema.yaml (generated from exoflow/params.py, where every
# default lives) and every check a dry run can make (exoflow.config_check): a bad config stops
# here with one line; --debug (or EXOFLOW_DEBUG=1) shows the traceback.
PLAN = plan_or_exit(config, sys.argv)
# A dry run shows every alignment run's resolved parameters ('*': set by the run's own entry).
if {"-n", "--dry-run", "--dryrun"} & set(sys.argv):
    for line in PLAN.run_table():
        print(f"exoflow: run {line}", file=sys.stderr)
# Ctrl-C: Snakemake waits for its running jobs without signalling them; SIGTERM them first
# (a training job saves where it resumes from), so that every job ends with Snakemake.
forward_interrupt()
PLAN.python = python_command()
CFG = PLAN.cfg  # the config as exoflow.params objects, every default filled in
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


# ---- job records -----------------------------------------------------------------------------


def expected_params(path):
    """(name, params as passed now, each a str) of the planned job that makes ``path``, or
    None when none makes it (exoflow.provenance.stale_jobs)."""
    planned = next((r for r in workflow.rules if r.is_producer(path)), None)
    if planned is None:
        return None
    return planned.name, params_now(planned, dict(planned.get_wildcards(path)))


def params_now(planned, wildcards):
    """The params the job of ``planned`` for ``wildcards`` passes now, each a str."""
    w = SimpleNamespace(**wildcards)
    out = {}
    for key, value in planned.params.items():
        if callable(value):
            try:
                value = call_param(value, w)
            except Exception:
                continue
        out[key] = str(value)
    return out


def call_param(f, wildcards):
    """A params function's value for ``wildcards``, called as Snakemake calls it (by the
    names of its arguments: wildcards, input, ...; the first one is the wildcards whatever its
    name); the input, output and the others are not known here (None)."""
    import inspect

    names = list(inspect.signature(f).parameters)
    known = {
        "wildcards": wildcards,
        "input": None,
        "output": None,
        "threads": None,
        "resources": None,
    }
    args = [wildcards] if names and names[0] not in known else []
    kwargs = {n: known[n] for n in names[len(args) :] if n in known}
    return f(*args, **kwargs)


def dag_settings():
    """The DAG settings Snakemake will build the DAG with: its API hands them to the workflow
    only after this file is read, so they are found on the stack of that call (Snakemake 9's
    DAGApi); None when this file is read for something else (--lint, a job's own process).
    """
    import inspect

    for frame in inspect.stack():
        obj = frame.frame.f_locals.get("self")
        settings = getattr(obj, "dag_settings", None)
        if type(obj).__name__ == "DAGApi" and settings is not None:
            return settings
    return None


def force_stale_jobs():
    """Every job whose outputs were made with other params than the plan's now (their job
    records, exoflow.provenance): one line each on stderr, and re-made (--forcerun), whatever
    .snakemake/ remembers. Not inside a job that an executor runs (it reads this file too).
    """
    settings = dag_settings()
    if settings is None or getattr(settings, "target_jobs", None):
        return
    stale = stale_jobs(RESULTS, expected_params)
    targets = [str(t) for t in (getattr(settings, "targets", None) or ())]
    forced = set()
    for s in stale:
        if in_scope(s.outputs[0], RESULTS, targets):
            print(f"exoflow: {s.line()}", file=sys.stderr)
            forced |= set(s.outputs)
        else:
            print(
                f"exoflow: {s.line().removesuffix('; re-made')}; not needed by "
                f"{' '.join(targets)}: re-made when a target needs it",
                file=sys.stderr,
            )
    if forced:
        settings.forcerun = frozenset(set(settings.forcerun or ()) | forced)


def print_rm_check():
    """After a run: the summary's path and whether its RM beats "the shorter answer wins" on
    the test pairs (exoflow.summary.rm_check), when both files exist."""
    from exoflow.io import read_json
    from exoflow.summary import rm_check, rm_check_line

    summary, rm = Path(res("summary.csv")), Path(res("models/rm/metrics.json"))
    if summary.exists() and rm.exists():
        print(
            f"exoflow: {summary}: {rm_check_line(rm_check(read_json(rm)))}",
            file=sys.stderr,
        )
