"""The alignment runs of a config: configurations (``align.runs``, ``align.grid``, ``align.only``) times seeds, their resolved parameters, losses and checkpoints, and the tables that show them.

A part of :class:`exoflow.plan.Plan` (a mixin: its methods read ``self.cfg`` and call the
other parts' methods)."""

from __future__ import annotations

import functools
import itertools
import re

from ..config import AlignParams, check_run_name
from ..errors import ParamsError
from ..losses import Loss, make_loss
from ..schedule import Visits, checkpoint_schedule

__all__ = ["Runs", "expand_grid", "rule_name"]



def rule_name(prefix: str, run: str) -> str:
    """``<prefix>_<run>`` with the characters a rule name cannot hold replaced by ``_``:
    ``rule_name("train_align", "exo-rw_nc2") == "train_align_exo_rw_nc2"``."""
    return prefix + "_" + re.sub(r"\W", "_", run)


def expand_grid(sweep: dict, where: str) -> list[tuple[str, dict]]:
    """``[(name, entry)]`` of one ``align.grid`` sweep: every combination of its list values
    (in the order the keys are given, the last varying fastest), named by its ``name``
    template (``"{loss}_nc{num_contrastive}"``) filled with the combination's values.

    >>> expand_grid({"name": "{loss}_nc{num_contrastive}", "data": "rm_labels",
    ...              "loss": ["exo-rw", "dpo-rw"], "num_contrastive": [2, 4]}, "g")[1]
    ('exo-rw_nc4', {'data': 'rm_labels', 'loss': 'exo-rw', 'num_contrastive': 4})
    """
    sweep = dict(sweep)
    template = sweep.pop("name", None)
    if not template:
        raise ParamsError(f"{where}: give a name template, e.g. name: "
                          "'{loss}_nc{num_contrastive}'")
    keys = list(sweep)
    values = [v if isinstance(v, list) else [v] for v in sweep.values()]
    swept = [k for k, v in sweep.items() if isinstance(v, list) and len(v) > 1]
    missing = [k for k in swept if "{" + k + "}" not in template]
    if missing:
        raise ParamsError(f"{where}: the name template {template!r} leaves out the swept key(s) "
                          f"{missing}, so runs would share a name")
    out, seen = [], {}
    for combo in itertools.product(*values):
        entry = dict(zip(keys, combo))
        try:
            name = template.format(**entry)
        except KeyError as e:
            raise ParamsError(f"{where}: name template {template!r} names {e}, which is not a "
                              "key of the sweep") from None
        check_run_name(name, where)
        if name in seen:
            raise ParamsError(f"{where}: {seen[name]} and {entry} both get the name {name!r}")
        seen[name] = entry
        out.append((name, entry))
    return out


class Runs:
    """The alignment runs and their parameters."""

    def seeds(self) -> list[int]:
        """``align.seeds`` (default: the top-level seed alone), in config order."""
        seeds = self.cfg.align.seeds or [self.cfg.seed]
        if len(set(seeds)) != len(seeds):
            raise ParamsError(f"align.seeds: {seeds} repeats a seed")
        return [int(x) for x in seeds]

    @functools.cached_property
    def _configurations(self) -> dict[str, dict]:
        a = self.cfg.align
        out = {name: entry.given() for name, entry in a.runs.items()}
        resolved = lambda e: dict(a.defaults.given(), **e)  # noqa: E731
        for n, sweep in enumerate(a.grid or []):
            for name, entry in expand_grid(sweep, f"align.grid[{n}]"):
                if name in out and resolved(out[name]) != resolved(entry):
                    raise ParamsError(f"align.grid[{n}]: run name {name!r} is already defined "
                                      f"with other parameters ({out[name]} vs {entry}); change "
                                      "the name template")
                out.setdefault(name, entry)
        if a.only:
            missing = [r for r in a.only if r not in out]
            if missing:
                raise ParamsError(f"align.only: {missing} are not runs of align.runs or "
                                  f"align.grid (those are {sorted(out)})")
            out = {r: out[r] for r in a.only}
        if not out:
            raise ParamsError("align: no runs (align.runs, align.grid and align.only give none)")
        return out

    def configurations(self) -> dict[str, dict]:
        """{configuration: its entry (overrides of align.defaults)}: ``align.runs`` then every
        ``align.grid`` sweep expanded, restricted to ``align.only`` when given (that list is the
        exact set, in its order, replacing whatever the extended config files define)."""
        return self._configurations

    def run_name(self, configuration: str, seed: int) -> str:
        return configuration if int(seed) == int(self.cfg.seed) else \
            f"{configuration}_s{int(seed)}"

    @functools.cached_property
    def _runs(self) -> list[tuple[str, str, int]]:
        out = [(self.run_name(c, s), c, s) for c in self.configurations() for s in self.seeds()]
        names = [r for r, _, _ in out]
        clash = sorted({r for r in names if names.count(r) > 1})
        if clash:
            raise ParamsError(f"align: runs {clash} are defined twice (a configuration named "
                              "like another's seed run?); rename it")
        return out

    def runs(self) -> list[tuple[str, str, int]]:
        """``[(run, configuration, seed)]``: every configuration with every seed, configuration
        by configuration."""
        return self._runs

    def align_runs(self) -> list[str]:
        """The alignment run names, configuration by configuration, seed by seed."""
        return [r for r, _, _ in self.runs()]

    def run_seed(self, run: str) -> int:
        return self._run(run)[2]

    def run_configuration(self, run: str) -> str:
        return self._run(run)[1]

    def _run(self, run):
        for r in self.runs():
            if r[0] == run:
                return r
        raise KeyError(f"no alignment run {run!r}; the runs are {self.align_runs()}")

    def _where(self, configuration: str) -> str:
        if configuration in self.cfg.align.runs:
            return f"align.runs.{configuration}"
        return f"align.grid run {configuration}"

    def where(self, run: str) -> str:
        """Where a run's parameters come from, for messages: ``align.runs.<configuration>``
        or ``align.grid run <configuration>``."""
        return self._where(self.run_configuration(run))

    def key_where(self, run: str, key: str) -> str:
        """The config key a run's ``key`` comes from: its own entry's, or align.defaults'."""
        conf = self.run_configuration(run)
        if key in self.configurations()[conf]:
            return f"{self._where(conf)}.{key}"
        return f"align.defaults.{key} (run {run})"

    @functools.cache  # noqa: B019 (a Plan lives as long as the workflow)
    def run_params(self, run: str) -> AlignParams:
        """A run's resolved parameters: ``align.defaults`` updated with its configuration's
        entry (its seed is the engine's, :meth:`runtime`)."""
        conf = self.run_configuration(run)
        entry = self.configurations()[conf]
        return AlignParams.from_dict(dict(self.cfg.align.defaults.given(), **entry),
                                     self.where(run))

    def run_loss(self, run: str) -> Loss:
        """A run's loss (:mod:`exoflow.losses`), its hyperparameters checked."""
        p = self.run_params(run)
        return make_loss(p.loss, p.to_dict(), f"{self.where(run)}.loss")

    def num_checkpoints(self, run: str) -> int:
        return self.run_params(run).num_checkpoints

    def checkpoint_schedule(self, run: str, num_prompts: int):
        """The run's checkpoints (:class:`exoflow.schedule.CheckpointAt`: step, epoch fraction,
        learning rate) on ``num_prompts`` training prompts with ``engine``'s processes: with
        ``saves_per_epoch`` the steps depend on the data size, which only the data stage knows
        (the training job computes them the same way)."""
        return checkpoint_schedule(self.run_params(run), num_prompts, self.processes(),
                                   self.where(run))

    def checkpoint_steps(self, run: str, num_prompts: int | None = None) -> list[int]:
        """The optimizer steps of ckpt1..ckptN (``num_prompts`` needed with saves_per_epoch)."""
        p = self.run_params(run)
        if p.save_every is not None:
            return [k * p.save_every for k in range(1, p.num_checkpoints + 1)]
        if num_prompts is None:
            raise ParamsError(f"{self.where(run)}: with saves_per_epoch the checkpoint steps "
                              "depend on the number of training prompts")
        return [c.step for c in self.checkpoint_schedule(run, num_prompts)]

    def run_visits(self, run: str) -> Visits:
        """What sets the records a run trains on (:mod:`exoflow.order`)."""
        p = self.run_params(run)
        return Visits(self.run_seed(run), p.max_steps, p.batch_size, p.group_by_length)

    def varying_keys(self) -> list[str]:
        """The alignment keys whose values differ between the runs (besides loss, data and
        num_contrastive, which are always shown), ``lr`` always: the run parameters the summary
        and the study show, so that an override a config left behind is seen."""
        import dataclasses

        shown = ("loss", "data", "num_contrastive")
        params = [self.run_params(r).to_dict() for r in self.align_runs()]
        return [f.name for f in dataclasses.fields(AlignParams) if f.name not in shown and
                (f.name == "lr" or len({repr(p[f.name]) for p in params}) > 1)]

    def run_meta(self) -> dict:
        """``{run: {configuration, seed, loss, data, num_contrastive, params}}`` in config
        order, for the summary and the study; ``params``: the :meth:`varying_keys`' values."""
        meta, keys = {}, self.varying_keys()
        for run, conf, seed in self.runs():
            p = self.run_params(run)
            d = p.to_dict()
            meta[run] = {"configuration": conf, "seed": seed, "loss": p.loss_label, "data": p.data,
                         "num_contrastive": p.num_contrastive,
                         "params": {k: d[k] for k in keys}}
        return meta

    def run_table(self) -> list[str]:
        """One line per run: its loss, data, N, seed and every key that differs between runs
        or from ``align.defaults``, a ``*`` marking a value its own entry (a run of
        align.runs or a grid point) sets against the defaults: an override a config file left
        behind shows before anything runs."""
        keys = ["loss", "data", "num_contrastive", *self.varying_keys()]
        defaults = self.cfg.align.defaults.given()
        extra = sorted({k for r in self.align_runs()
                        for k in self.configurations()[self.run_configuration(r)]
                        if k not in keys and k in defaults})
        out = []
        for run in self.align_runs():
            own = self.configurations()[self.run_configuration(run)]
            p = self.run_params(run)
            d = dict(p.to_dict(), loss=p.loss_label)  # ipo(tau=0.05), as the summary says
            cells = [f"{k}={d[k]}{'*' if k in own and own[k] != defaults.get(k, own[k]) else ''}"
                     for k in [*keys, *extra]]
            out.append(f"{run} (seed {self.run_seed(run)}): " + " ".join(cells))
        return out

    def comparisons(self) -> list[tuple[str, str]]:
        """``study.compare``: pairs of configurations ``[a, b]`` (the difference a - b; that
        both are configurations is a rule of :mod:`exoflow.config.constraints`)."""
        return [(a, b) for a, b in self.cfg.study.compare]

    def eval_checkpoints(self, run: str) -> list[int]:
        """The evaluated checkpoints of a run: 1..eval.checkpoints (never more than the run has:
        exoflow.config.constraints refuses that)."""
        return list(range(1, self.cfg.eval.checkpoints + 1))

    def eval_scoring(self) -> dict:
        """What the checkpoint evaluation reads of ``eval`` (the prompt length it sampled with,
        its scoring batches, the KL temperature) and nothing else: its shell line shows these
        keys only, and the others (read back at their defaults) re-run nothing."""
        e = self.cfg.eval
        return {k: getattr(e, k) for k in ("max_prompt_len", "score_batch_size", "temperature")}
