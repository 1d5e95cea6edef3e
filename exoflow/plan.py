"""The workflow's plan, from a config: which runs exist and with which parameters, their
checkpoints, file names, evaluation targets and the command prefixes of GPU jobs.

No torch or Snakemake import: ``rules/common.smk`` builds one :class:`Plan` while the Snakefile
is parsed and its input functions call it; the tests call it directly. Every value comes from
the parameter objects of :mod:`exoflow.params` (``Plan.cfg``), so no default is stated here.

Paths are relative to the results folder ``results/<run_name>/`` (:attr:`Plan.results`).
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from pathlib import Path

from . import gpus
from .errors import ExoflowError, ParamsError
from .losses import Loss, make_loss
from .params import AlignParams, Config, EngineParams, Runtime, check_run_name
from .resources import snakemake_resources
from .schedule import Visits, checkpoint_schedule

__all__ = ["Plan", "expand_grid", "rule_name"]

SPLITS = ("train", "test")
RESERVED_RUNS = ("sft", "dataset")  # eval/sft/ckpt0 is the SFT model, eval/dataset the data


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


def _regex(names) -> str:
    return "|".join(re.escape(n) for n in names)


class Plan:
    """Everything the rules need to know, computed from ``config`` (a mapping, validated into
    :class:`exoflow.params.Config`) and the shell word that runs Python (``python``: the
    interpreter Snakemake runs in, quoted)."""

    def __init__(self, config: dict, python: str = "python"):
        self.cfg = config if isinstance(config, Config) else Config.from_dict(config)
        self.python = python
        bad = [r for r in self.align_runs() if r in RESERVED_RUNS]
        if bad:
            raise ParamsError(f"align.runs: {bad} are reserved names (eval/sft/ckpt0 is the SFT "
                              "model, eval/dataset the dataset's own responses); rename the run")
        for run in self.align_runs():
            self.run_params(run)  # every run resolves to valid parameters

    # ---- paths -----------------------------------------------------------------------------

    @property
    def results(self) -> str:
        return f"results/{self.cfg.run_name}"

    def res(self, path: str) -> str:
        """A path under ``results/<run_name>/``."""
        return f"{self.results}/{path}"

    # ---- data ------------------------------------------------------------------------------

    def data_params(self, split: str):
        """The data section as one split sees it (:meth:`exoflow.params.DataParams.for_split`)."""
        return self.cfg.data.for_split(split)

    def is_synthetic(self) -> bool:
        return self.cfg.data.source == "synthetic"

    # ---- models and engine -------------------------------------------------------------------

    def base_is_built(self) -> bool:
        """Whether a rule makes the base model folder ``models/base``: the scratch model, or
        the import of a GGUF file."""
        return self.cfg.model.is_scratch or self.cfg.model.is_gguf

    def base_model(self) -> str:
        """The folder (or hub name) SFT and RM start from: ``models/base`` when a rule makes it
        (:meth:`base_is_built`), else ``model.init`` (a leading ``~`` expanded)."""
        if self.base_is_built():
            return self.res("models/base")
        return os.path.expanduser(self.cfg.model.init)

    def gguf_file(self) -> str:
        """``model.init``'s GGUF file (a leading ``~`` expanded): the import's input."""
        return os.path.expanduser(self.cfg.model.init)

    def base_model_inputs(self) -> list[str]:
        """The files SFT and RM depend on: the built base model's config.json (a rule makes
        it), or for a local ``model.init`` folder its config, weights and tokenizer files, so
        that a checkpoint fetched again (or replaced) re-runs everything trained from it. A hub
        name has no local files: the hub's cache is not the workflow's to watch."""
        if self.base_is_built():
            return [self.res("models/base/config.json")]
        folder = Path(self.base_model())
        if not folder.is_dir():
            return []
        keep = ("config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt")
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and (
            p.name in keep or p.suffix in (".safetensors", ".bin")))

    def scratch_max_len(self) -> int | None:
        """The scratch tokenizer's model_max_length: the scratch model's positions."""
        s = self.cfg.model.scratch
        return s.max_position_embeddings if s else None

    def gpus(self) -> int:
        return self.cfg.engine.gpus

    def longest_sequences(self) -> dict[str, int]:
        """``{what: tokens}``: the longest sequence each stage feeds the model (prompt and
        response, the generated tokens included, EOS too), by the keys that set it."""
        c = self.cfg
        out = {"sft.max_len": c.sft.max_len, "rm.max_len": c.rm.max_len,
               "sample.max_prompt_len + sample.max_new_tokens":
                   c.sample.max_prompt_len + c.sample.max_new_tokens,
               # the exact KL re-scores the samples with their EOS appended
               "eval.max_prompt_len + eval.max_new_tokens + 1":
                   c.eval.max_prompt_len + c.eval.max_new_tokens + 1}
        for run in self.align_runs():
            out[self.key_where(run, "max_len")] = self.run_params(run).max_len
        return out

    def job_resources(self, stage: str, run: str | None = None) -> dict:
        """A job's ``mem_mb`` and ``runtime`` (minutes) for a cluster, from its model's size and
        its work (:mod:`exoflow.resources`), as functions Snakemake evaluates per job."""
        return snakemake_resources(self, stage, run)

    def inference_gpus(self) -> int:
        """GPUs of a sampling, scoring or evaluation job: one when training has any."""
        return min(self.gpus(), 1)

    def runtime(self, run: str | None = None) -> Runtime:
        """What a training job runs with (the run's seed for an alignment run)."""
        return self.cfg.runtime(None if run is None else self.run_seed(run))

    def ref_runtime(self) -> Runtime:
        """The engine keys that set the precision the alignment runs train in (and so the one
        the reference log-probs are computed in), the others at their defaults: they would only
        cause re-runs."""
        e = self.cfg.engine
        return Runtime(engine=EngineParams(deepspeed=e.deepspeed, gpus=self.inference_gpus()),
                       dtype=self.cfg.model.dtype)

    def deepspeed_inputs(self) -> list[str]:
        """``[engine.deepspeed]`` when set: an input of every rule whose job it configures
        (training, and the reference cache whose precision it decides), so that an edited ZeRO
        config re-runs them (Snakemake compares the file's contents)."""
        ds = self.cfg.engine.deepspeed
        return [str(ds)] if ds else []

    def processes(self) -> int:
        return self.cfg.engine.num_processes

    def train_launcher(self) -> str:
        """Multi-process training when the job has more than one process (one per GPU, or
        ``engine.processes`` on the CPU): torch.distributed.run (torchrun), not the deepspeed
        launcher, which drops CUDA_VISIBLE_DEVICES (so it would ignore the GPUs SLURM or the
        lock pool gave the job) and always binds port 29500. The Trainer still runs DeepSpeed
        ZeRO from engine.deepspeed."""
        n = self.processes()
        if n <= 1:
            return self.python
        return f"{self.python} -m torch.distributed.run --standalone --nproc_per_node {n}"

    def gpu_prefix(self, n: int) -> str:
        """Shell prefix giving a job ``n`` GPUs of its own on a workstation: exoflow.gpus takes
        ``n`` free devices from a file-lock pool, sets CUDA_VISIBLE_DEVICES and runs the command
        ('' when n is 0; unchanged where CUDA_VISIBLE_DEVICES is already set, e.g. by SLURM)."""
        return gpus.prefix(n, self.python)

    def train_prefix(self) -> str:
        """The shell words before a training script: its GPUs, threads per process (at least 1)
        and the launcher (``{threads}`` is the job's, filled in by Snakemake)."""
        n = self.processes()
        return (f"{self.gpu_prefix(self.gpus())}OMP_NUM_THREADS=$(( {{threads}} / {n} > 1 ? "
                f"{{threads}} / {n} : 1 )) {self.train_launcher()}")

    def inference_prefix(self, threads: bool = True) -> str:
        """The shell words before an inference script: its GPU and (with ``threads``) the
        job's threads as OpenMP's."""
        omp = "OMP_NUM_THREADS={threads} " if threads else ""
        return f"{self.gpu_prefix(self.inference_gpus())}{omp}{self.python}"

    def inference_dtype(self) -> str | None:
        """The precision inference jobs load models in: ``model.dtype``, or None for fp32 (the
        saved models' own)."""
        d = self.cfg.model.dtype
        return None if d == "fp32" else d

    # ---- alignment runs ------------------------------------------------------------------------
    #
    # A *configuration* is a named set of run parameters: an entry of ``align.runs``, or one
    # point of an ``align.grid`` sweep. A *run* is a configuration trained with one seed of
    # ``align.seeds``: ``<configuration>`` for the top-level ``seed``, ``<configuration>_s<seed>``
    # for any other, so that adding a seed renames (and re-runs) nothing that exists.

    def seeds(self) -> list[int]:
        """``align.seeds`` (default: the top-level seed alone), in config order."""
        seeds = self.cfg.align.seeds or [self.cfg.seed]
        if len(set(seeds)) != len(seeds):
            raise ParamsError(f"align.seeds: {seeds} repeats a seed")
        return [int(x) for x in seeds]

    @functools.cached_property
    def _configurations(self) -> dict[str, dict]:
        a = self.cfg.align
        out = {name: dict(entry or {}) for name, entry in a.runs.items()}
        resolved = lambda e: dict(a.defaults, **e)  # noqa: E731
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
        return AlignParams.from_dict(dict(self.cfg.align.defaults, **entry), self.where(run))

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

    def precompute_ref(self) -> bool:
        return self.cfg.align.precompute_ref

    def align_data(self, run: str) -> str:
        """The training records of a run: data/<rm_labels|p2r>/train.jsonl."""
        return self.res(f"data/{self.run_params(run).data}/train.jsonl")

    def ckpt_dir(self, run: str, k: int) -> str:
        return self.res(f"models/align/{run}/ckpt{k}")

    def ckpt_config(self, run: str, k: int) -> str:
        """config.json of checkpoint k (1..num_checkpoints(run)) of an alignment run."""
        return f"{self.ckpt_dir(run, k)}/config.json"

    def align_ckpt_configs(self, run: str) -> list[str]:
        return [self.ckpt_config(run, k) for k in range(1, self.num_checkpoints(run) + 1)]

    def align_metrics(self, run: str) -> str:
        return self.res(f"models/align/{run}/metrics.json")

    def ref_cache_name(self, run: str) -> str:
        """``<data>_t<temp>_l<max_len>_g<max_gen_len>_e<eos_after_cut: 1|0>[_<visits>].jsonl``:
        runs with the same data, temp and truncation share it (with ``align.ref_records:
        visited`` those that visit the same records: :class:`exoflow.schedule.Visits`). The
        temp is written with repr() so that the name gives back the float."""
        p = self.run_params(run)
        visits = f"_{self.run_visits(run).name}" if self.cfg.align.ref_records == "visited" else ""
        return (f"{p.data}_t{float(p.temp)!r}_l{int(p.max_len)}_g{int(p.max_gen_len)}"
                f"_e{int(p.eos_after_cut)}{visits}.jsonl")

    def run_visits(self, run: str) -> Visits:
        """What sets the records a run trains on (:mod:`exoflow.order`)."""
        p = self.run_params(run)
        return Visits(self.run_seed(run), p.max_steps, p.batch_size, p.group_by_length)

    def ref_cache_path(self, run: str) -> str:
        return self.res(f"data/ref_logps/{self.ref_cache_name(run)}")

    def ref_cache_inputs(self, run: str) -> list[str]:
        """[the cache] with align.precompute_ref, else [] (the trainer runs the reference)."""
        return [self.ref_cache_path(run)] if self.precompute_ref() else []

    def align_run_regex(self) -> str:
        return _regex(self.align_runs())

    def align_data_regex(self) -> str:
        return _regex(sorted({self.run_params(r).data for r in self.align_runs()}))

    # ---- evaluation ------------------------------------------------------------------------------

    def eval_checkpoints(self, run: str) -> list[int]:
        """The evaluated checkpoints of a run: 1..eval.checkpoints (never more than the run has:
        exoflow.constraints refuses that)."""
        return list(range(1, self.cfg.eval.checkpoints + 1))

    def eval_run_regex(self) -> str:
        """The run wildcard of samples/ and eval/: sft or an alignment run."""
        return _regex(["sft", *self.align_runs()])

    def ckpt_model(self, run: str, k: int) -> str:
        """config.json of the model behind samples/<run>/ckpt<k>: SFT for sft/ckpt0, else the
        run's checkpoint k (1..its checkpoint count)."""
        k = int(k)
        if run == "sft":
            if k != 0:
                raise ParamsError(f"sft/ckpt{k}: the SFT model is checkpoint 0 only (sft/ckpt0)")
            return self.res("models/sft/config.json")
        n = self.num_checkpoints(run)
        if not 1 <= k <= n:
            raise ParamsError(f"{run}/ckpt{k}: run {run} has checkpoints ckpt1..ckpt{n} "
                              "(its step 0 is the SFT model: sft/ckpt0)")
        return self.ckpt_config(run, k)

    def eval_scoring(self) -> dict:
        """What the checkpoint evaluation reads of ``eval`` (the prompt length it sampled with,
        its scoring batches, the KL temperature) and nothing else: its shell line shows these
        keys only, and the others (read back at their defaults) re-run nothing."""
        e = self.cfg.eval
        return {k: getattr(e, k) for k in ("max_prompt_len", "score_batch_size", "temperature")}

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
        defaults = self.cfg.align.defaults
        extra = sorted({k for r in self.align_runs()
                        for k in self.configurations()[self.run_configuration(r)]
                        if k not in keys and k in defaults})
        out = []
        for run in self.align_runs():
            own = self.configurations()[self.run_configuration(run)]
            d = self.run_params(run).to_dict()
            cells = [f"{k}={d[k]}{'*' if k in own and own[k] != defaults.get(k, own[k]) else ''}"
                     for k in [*keys, *extra]]
            out.append(f"{run} (seed {self.run_seed(run)}): " + " ".join(cells))
        return out

    def comparisons(self) -> list[tuple[str, str]]:
        """``study.compare``: pairs of configurations ``[a, b]`` (the difference a - b)."""
        confs = self.configurations()
        out = []
        for a, b in self.cfg.study.compare:
            for c in (a, b):
                if c not in confs:
                    raise ParamsError(f"study.compare: {c!r} is not a configuration "
                                      f"(those are {sorted(confs)})")
            out.append((a, b))
        return out

    # ---- the LLM judge ---------------------------------------------------------------------------

    def judge_enabled(self) -> bool:
        return self.cfg.judge.base_url is not None

    def judge_checkpoints(self, run: str) -> list[int]:
        """The judged checkpoints of a run (judge.checkpoints, else every evaluated one)."""
        return list(self.cfg.judge.checkpoints or self.eval_checkpoints(run))

    def judge_targets(self) -> list[str]:
        """Every (run, checkpoint, baseline)'s win_rate.json, and the SFT model's against the
        dataset's chosen responses."""
        j = self.cfg.judge
        out = [self.res(f"judge/{run}/ckpt{k}/{b}/win_rate.json") for run in self.align_runs()
               for k in self.judge_checkpoints(run) for b in j.baselines]
        if "chosen" in j.baselines:
            out.insert(0, self.res("judge/sft/ckpt0/chosen/win_rate.json"))
        return out

    def judge_all_targets(self) -> list[str]:
        """judge_all's inputs; without judge.base_url a ConfigError naming it (the dry run)."""
        if not self.judge_enabled():
            raise ExoflowError("judge.base_url is not set: point it at an OpenAI-compatible "
                              "endpoint (and name judge.model) to judge, e.g. a local "
                              "`transformers serve` (README, Judge win rates)")
        return self.judge_targets()

    def judge_template_inputs(self) -> list[str]:
        """[judge.template] when it names a file: an input, so that editing it re-judges."""
        t = self.cfg.judge.template
        return [os.path.expanduser(t)] if t else []

    # ---- targets -------------------------------------------------------------------------------

    def data_targets(self) -> list[str]:
        return [self.res(f"data/{kind}/{s}.jsonl") for kind in ("pref", "p2r")
                for s in SPLITS] + [self.res("data/stats.json")]

    def model_targets(self) -> list[str]:
        return [self.res("models/sft/config.json"), self.res("models/rm/config.json")]

    def label_targets(self) -> list[str]:
        return [self.res(f"data/rm_labels/{s}.jsonl") for s in SPLITS]

    def align_targets(self) -> list[str]:
        """Every run's checkpoints and metrics.json."""
        return [f for run in self.align_runs()
                for f in [*self.align_ckpt_configs(run), self.align_metrics(run)]]

    def eval_rewards_targets(self) -> list[str]:
        """Every run's per-prompt evaluation records (what the summary and the study read)."""
        return [self.res(f"eval/{run}/ckpt{k}/rewards.jsonl")
                for run in self.align_runs() for k in self.eval_checkpoints(run)]

    def eval_checkpoint_targets(self) -> list[str]:
        return [self.res(f"eval/{run}/ckpt{k}/reward.json")
                for run in self.align_runs() for k in self.eval_checkpoints(run)]

    def eval_all_targets(self) -> list[str]:
        """The summary and every file it is made from: Snakemake does not re-make a missing
        intermediate file while what was made from it is up to date, so a deleted checkpoint
        evaluation is only redone (and the summary with it) when it is itself a target."""
        return [self.res("summary.csv"), self.res("summary.png"),
                self.res("eval/sft/ckpt0/reward.json"), self.res("eval/dataset/reward.json"),
                *self.eval_checkpoint_targets()]

    def all_targets(self) -> list[str]:
        return (self.data_targets() + self.model_targets() + self.label_targets()
                + self.eval_all_targets())
