"""The constraints between config keys that no one section can check, each stated once, in one
ordered table: the dry run (:func:`exoflow.config.check.check_config`) checks them in this order
and stops at the first broken one with a :class:`ConfigError` naming the keys, what was given
and what to set. A section's own constraints stay in its class (:meth:`exoflow.config.Section
.check`); what forms the run set at all (seeds, grids, ``align.only``, names defined twice)
in :class:`exoflow.plan.Plan`.

Add one: a function ``(plan) -> None`` raising :class:`ConfigError`, whose docstring is the
rule, and a line in :data:`CONSTRAINTS`. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ExoflowError, ParamsError
from ..io import find_split_file, model_config
from ..modeling import gguf_metadata
from ..plan import RESERVED_RUNS, Plan
from ..runtime import gradient_accumulation_steps

__all__ = ["CONSTRAINTS", "ConfigError", "check_constraints", "gguf_positions", "model_positions"]

CANDIDATES_P2R = 2  # [chosen, rejected]


class ConfigError(ExoflowError, ValueError):
    """The config is inconsistent; the message names the key(s)."""


def reserved_run_names(plan: Plan) -> None:
    """No run is named like a folder the results layout gives something else (eval/sft is
    the SFT model, eval/dataset the dataset's own responses)."""
    bad = [r for r in plan.align_runs() if r in RESERVED_RUNS]
    if bad:
        raise ConfigError(f"align.runs: {bad} are reserved names (eval/sft/ckpt0 is the SFT "
                          "model, eval/dataset the dataset's own responses); rename the run")


def run_losses(plan: Plan) -> None:
    """Each run's loss is a known one with its own hyperparameters in bounds, and a pairwise
    loss compares pairs (num_contrastive 2)."""
    for run in plan.align_runs():
        plan.run_loss(run)


def candidates_in_groups(plan: Plan) -> None:
    """Each run's num_contrastive divides the candidates per prompt of its data
    (sample.num_return for rm_labels, [chosen, rejected] for p2r)."""
    c = plan.cfg
    for run in plan.align_runs():
        p = plan.run_params(run)
        k, source = ((c.sample.num_return, f"sample.num_return = {c.sample.num_return}")
                     if p.data == "rm_labels" else (CANDIDATES_P2R, "[chosen, rejected]"))
        if k % p.num_contrastive:
            raise ConfigError(
                f"{plan.key_where(run, 'num_contrastive')} = {p.num_contrastive} does not "
                f"divide the {k} "
                f"candidates per prompt of its data {p.data} ({source}); set num_contrastive "
                f"to a divisor of {k}" + (", or sample.num_return to a multiple of "
                                          f"{p.num_contrastive}" if p.data == "rm_labels" else ""))


def evaluated_checkpoints(plan: Plan) -> None:
    """eval.checkpoints is at most each run's number of checkpoints."""
    c = plan.cfg
    for run in plan.align_runs():
        p = plan.run_params(run)
        if c.eval.checkpoints > p.num_checkpoints:
            raise ConfigError(
                f"eval.checkpoints = {c.eval.checkpoints} but run {run} has "
                f"{p.num_checkpoints} checkpoint(s) ({plan.where(run)}: "
                + (f"max_steps {p.max_steps} / save_every {p.save_every}"
                   if p.save_every is not None else f"checkpoints {p.checkpoints}")
                + "); lower eval.checkpoints or save more often")


def study_compares_configurations(plan: Plan) -> None:
    """study.compare names configurations (entries of align.runs or grid points, not seed
    runs)."""
    confs = plan.configurations()
    for pair in plan.comparisons():
        for c in pair:
            if c not in confs:
                raise ConfigError(f"study.compare: {c!r} is not a configuration (those are "
                                  f"{sorted(confs)})")


def gold_needs_synthetic(plan: Plan) -> None:
    """eval.select_by: gold needs the synthetic source (the only one with a gold reward)."""
    c = plan.cfg
    if c.eval.select_by == "gold" and c.data.source != "synthetic":
        raise ConfigError(f"eval.select_by = gold needs the synthetic source (data.source is "
                          f"{c.data.source}: no gold reward); use reward or win_rate")


def local_data_has_both_splits(plan: Plan) -> None:
    """data.source: local needs data.path, a folder holding train and test."""
    c = plan.cfg
    if c.data.source == "local":
        if not c.data.path:
            raise ConfigError("data.source = local needs data.path: a folder with "
                              "train.jsonl[.gz] and test.jsonl[.gz]")
        for split in ("train", "test"):
            try:
                find_split_file(c.data.path, split)
            except FileNotFoundError as e:
                raise ConfigError(f"data.path: {e}") from None


def judged_prompts_and_checkpoints(plan: Plan) -> None:
    """The judge reads report prompts that were evaluated, evaluated checkpoints, and a
    template that is a file."""
    c, j = plan.cfg, plan.cfg.judge
    if not j.base_url:
        return
    if c.eval.num_prompts is not None and c.eval.val_prompts + j.num_prompts > \
            c.eval.num_prompts:
        raise ConfigError(
            f"judge.num_prompts = {j.num_prompts} report prompts after eval.val_prompts = "
            f"{c.eval.val_prompts} exceed eval.num_prompts = {c.eval.num_prompts}; lower "
            f"judge.num_prompts to at most {c.eval.num_prompts - c.eval.val_prompts}")
    for k in j.checkpoints or []:
        if k > c.eval.checkpoints:
            raise ConfigError(f"judge.checkpoints: {k} is not an evaluated checkpoint "
                              f"(eval.checkpoints = {c.eval.checkpoints})")
    if j.template and not Path(j.template).expanduser().is_file():
        raise ConfigError(f"judge.template: no such file {j.template!r}")


def batches_split_over_processes(plan: Plan) -> None:
    """Each training stage's batch_size is a multiple of micro_batch_size x the job's
    processes (the training job's own rule, :func:`exoflow.runtime.gradient_accumulation_steps`,
    applied to the planned processes)."""
    c, n = plan.cfg, plan.processes()
    stages = [("sft", c.sft), ("rm", c.rm)] + [(plan.where(r), plan.run_params(r))
                                               for r in plan.align_runs()]
    for where, p in stages:
        try:
            gradient_accumulation_steps(p.batch_size, p.micro_batch_size, n)
        except ParamsError as e:
            raise ConfigError(f"{where}.{e}") from None


# The keys a model config names its longest sequence with (GPT-2: n_positions).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")


def model_positions(plan: Plan) -> tuple[int, str] | None:
    """``(positions, where)`` of the model every stage trains: the scratch size, a local
    folder's config.json or a GGUF file's metadata; None when it cannot be known before a job
    runs (a hub name)."""
    m = plan.cfg.model
    if m.is_scratch:
        return m.scratch.max_position_embeddings, "model.scratch.max_position_embeddings"
    if m.is_gguf:
        return gguf_positions(Path(m.init).expanduser())
    cfg = Path(m.init).expanduser() / "config.json"
    data = model_config(cfg.parent)
    for key in POSITION_KEYS:
        if isinstance(data.get(key), int):
            return data[key], f"{key} = {data[key]} in {cfg}"
    return None


def gguf_positions(path: Path) -> tuple[int, str] | None:
    """``<architecture>.context_length`` of a GGUF file's metadata (None when the gguf
    package is missing or the key is)."""
    get = gguf_metadata(path)
    if get is None:
        return None
    arch = get("general.architecture")
    n = get(f"{arch}.context_length") if arch else None
    return (int(n), f"{arch}.context_length = {int(n)} in {path}") if n else None


def sequences_fit_positions(plan: Plan) -> None:
    """Every stage's longest sequence fits the model's positions (ConfigError naming both)."""
    limit = model_positions(plan)
    if limit is None:
        return
    n, where = limit
    for what, tokens in plan.longest_sequences().items():
        if tokens > n:
            raise ConfigError(f"{what} = {tokens} tokens exceeds the model's {n} positions "
                              f"({where}); lower it (the model cannot attend that far)")


CONSTRAINTS: list[Callable[[Plan], None]] = [
    reserved_run_names,
    run_losses,
    candidates_in_groups,
    evaluated_checkpoints,
    study_compares_configurations,
    gold_needs_synthetic,
    local_data_has_both_splits,
    judged_prompts_and_checkpoints,
    batches_split_over_processes,
    sequences_fit_positions,
]


def check_constraints(plan: Plan) -> None:
    """Every rule of :data:`CONSTRAINTS`, in order; ConfigError on the first broken one."""
    for rule in CONSTRAINTS:
        try:
            rule(plan)
        except ExoflowError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(str(e)) from None
