"""The workflow's plan, from a validated config: which runs exist and with which parameters,
their checkpoint steps, file names, evaluation targets and the command prefixes of GPU jobs.

No torch or Snakemake import: ``rules/common.smk`` builds one :class:`Plan` while the Snakefile
is parsed and its input functions call it; the tests call it directly.

Paths are relative to the results folder ``results/<run_name>/`` (:attr:`Plan.results`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import gpus

__all__ = ["Plan", "as_json", "expand_grid", "rule_name"]

SPLITS = ("train", "test")
RESERVED_RUNS = ("sft", "dataset")  # eval/sft/ckpt0 is the SFT model, eval/dataset the data


def as_json(obj) -> str:
    """A config section as one JSON word for a script's command line (sorted keys)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


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
    import itertools

    sweep = dict(sweep)
    template = sweep.pop("name", None)
    if not template:
        raise ValueError(f"{where}: give a name template, e.g. name: '{{loss}}_nc{{num_contrastive}}'")
    keys = list(sweep)
    values = [v if isinstance(v, list) else [v] for v in sweep.values()]
    swept = [k for k, v in sweep.items() if isinstance(v, list) and len(v) > 1]
    missing = [k for k in swept if "{" + k + "}" not in template]
    if missing:
        raise ValueError(f"{where}: the name template {template!r} leaves out the swept key(s) "
                         f"{missing}, so runs would share a name")
    out, seen = [], {}
    for combo in itertools.product(*values):
        entry = dict(zip(keys, combo))
        try:
            name = template.format(**entry)
        except KeyError as e:
            raise ValueError(f"{where}: name template {template!r} names {e}, which is not a "
                             "key of the sweep") from None
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(f"{where}: run name {name!r} may hold letters, digits, '.', '_' and "
                             "'-' only")
        if name in seen:
            raise ValueError(f"{where}: {seen[name]} and {entry} both get the name {name!r}")
        seen[name] = entry
        out.append((name, entry))
    return out


def _regex(names) -> str:
    return "|".join(re.escape(n) for n in names)


@dataclass
class Plan:
    """Everything the rules need to know, computed from ``config`` (a validated dict) and the
    shell word that runs Python (``python``: the interpreter Snakemake runs in, quoted)."""

    config: dict
    python: str = "python"

    def __post_init__(self):
        bad = [r for r in self.align_runs() if r in RESERVED_RUNS]
        if bad:
            raise ValueError(f"align.runs: {bad} are reserved names (eval/sft/ckpt0 is the SFT "
                             "model, eval/dataset the dataset's own responses); rename the run")

    # ---- paths -----------------------------------------------------------------------------

    @property
    def results(self) -> str:
        return f"results/{self.config['run_name']}"

    def res(self, path: str) -> str:
        """A path under ``results/<run_name>/``."""
        return f"{self.results}/{path}"

    # ---- data ------------------------------------------------------------------------------

    def data_params(self, split: str) -> dict:
        """The data section as one split sees it, so that changing ``data.max_train`` does not
        re-run the test split (and everything downstream of it)."""
        d = dict(self.config["data"])
        other = "test" if split == "train" else "train"
        d.pop(f"max_{other}", None)
        if d["source"] == "synthetic":
            syn = dict(d.get("synthetic") or {})
            syn.pop(f"num_{other}", None)
            d["synthetic"] = syn
        else:
            d.pop("synthetic", None)
        return d

    def is_synthetic(self) -> bool:
        return self.config["data"]["source"] == "synthetic"

    # ---- models and engine -------------------------------------------------------------------

    def is_scratch(self) -> bool:
        return self.config["model"]["init"] == "scratch"

    def base_model(self) -> str:
        """The folder (or hub name) SFT and RM start from: ``models/base`` for scratch, else
        ``model.init`` (a leading ``~`` expanded)."""
        init = str(self.config["model"]["init"])
        if self.is_scratch():
            return self.res("models/base")
        return os.path.expanduser(init)

    def base_model_inputs(self) -> list[str]:
        """The files SFT and RM depend on: the scratch base model's config.json (a rule makes
        it), or for a local ``model.init`` folder its config, weights and tokenizer files, so
        that a checkpoint fetched again (or replaced) re-runs everything trained from it. A hub
        name has no local files: the hub's cache is not the workflow's to watch."""
        if self.is_scratch():
            return [self.res("models/base/config.json")]
        folder = Path(self.base_model())
        if not folder.is_dir():
            return []
        keep = ("config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt")
        return sorted(str(p) for p in folder.iterdir() if p.is_file() and (
            p.name in keep or p.suffix in (".safetensors", ".bin")))

    def gpus(self) -> int:
        return int(self.config["engine"].get("gpus") or 0)

    def engine_params(self) -> dict:
        """``engine`` + the model's ``dtype`` + the top-level ``seed``: what a training script's
        ``--engine`` takes."""
        c = self.config
        lora = c["model"].get("lora")
        return dict(c["engine"], dtype=c["model"]["dtype"], seed=c["seed"],
                    **({"lora": lora} if lora is not None else {}))

    def ref_engine_params(self) -> dict:
        """The engine keys that set the precision the alignment runs train in (and so the one
        the reference log-probs are computed in); the others would only cause re-runs."""
        e = self.config["engine"]
        return {"deepspeed": e.get("deepspeed"), "gpus": min(self.gpus(), 1),
                "dtype": self.config["model"]["dtype"]}

    def deepspeed_inputs(self) -> list[str]:
        """``[engine.deepspeed]`` when set: an input of every rule whose job it configures
        (training, and the reference cache whose precision it decides), so that an edited ZeRO
        config re-runs them (Snakemake compares the file's contents)."""
        ds = self.config["engine"].get("deepspeed")
        return [str(ds)] if ds else []

    def processes(self) -> int:
        """Training processes per job: ``engine.processes``, else ``engine.gpus``, at least 1."""
        e = self.config["engine"]
        return int(e.get("processes") or max(self.gpus(), 1))

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

    # ---- alignment runs ------------------------------------------------------------------------
    #
    # A *configuration* is a named set of run parameters: an entry of ``align.runs``, or one
    # point of an ``align.grid`` sweep. A *run* is a configuration trained with one seed of
    # ``align.seeds``: ``<configuration>`` for the top-level ``seed``, ``<configuration>_s<seed>``
    # for any other, so that adding a seed renames (and re-runs) nothing that exists.

    def seeds(self) -> list[int]:
        """``align.seeds`` (default: the top-level seed alone), in config order."""
        seeds = self.config["align"].get("seeds") or [self.config["seed"]]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"align.seeds: {seeds} repeats a seed")
        return [int(x) for x in seeds]

    def configurations(self) -> dict[str, dict]:
        """{configuration: its entry (overrides of align.defaults)}: ``align.runs`` then every
        ``align.grid`` sweep expanded, restricted to ``align.only`` when given (that list is the
        exact set, in its order, replacing whatever the extended config files define)."""
        if getattr(self, "_configs", None) is not None:
            return self._configs
        a = self.config["align"]
        out = {name: dict(entry or {}) for name, entry in (a.get("runs") or {}).items()}
        defaults = a.get("defaults") or {}
        resolved = lambda e: dict(defaults, **e)  # noqa: E731
        for n, sweep in enumerate(a.get("grid") or []):
            for name, entry in expand_grid(sweep, f"align.grid[{n}]"):
                if name in out and resolved(out[name]) != resolved(entry):
                    raise ValueError(f"align.grid[{n}]: run name {name!r} is already defined "
                                     f"with other parameters ({out[name]} vs {entry}); change "
                                     "the name template")
                out.setdefault(name, entry)
        only = a.get("only")
        if only:
            missing = [r for r in only if r not in out]
            if missing:
                raise ValueError(f"align.only: {missing} are not runs of align.runs or "
                                 f"align.grid (those are {sorted(out)})")
            out = {r: out[r] for r in only}
        self._configs = out
        return out

    def run_name(self, configuration: str, seed: int) -> str:
        return configuration if int(seed) == int(self.config["seed"]) else \
            f"{configuration}_s{int(seed)}"

    def runs(self) -> list[tuple[str, str, int]]:
        """``[(run, configuration, seed)]``: every configuration with every seed, configuration
        by configuration."""
        out = [(self.run_name(c, s), c, s) for c in self.configurations() for s in self.seeds()]
        names = [r for r, _, _ in out]
        clash = sorted({r for r in names if names.count(r) > 1})
        if clash:
            raise ValueError(f"align: runs {clash} are defined twice (a configuration named "
                             "like another's seed run?); rename it")
        return out

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

    def run_params(self, run: str) -> dict:
        """A run's resolved parameters: ``align.defaults`` updated with its configuration's
        entry (its seed is the engine's, :meth:`run_engine_params`)."""
        conf = self.configurations()[self.run_configuration(run)]
        return dict(self.config["align"]["defaults"], **conf)

    def run_engine_params(self, run: str) -> dict:
        """:meth:`engine_params` with the run's seed."""
        return dict(self.engine_params(), seed=self.run_seed(run))

    def num_checkpoints(self, run: str) -> int:
        p = self.run_params(run)
        return p["max_steps"] // p["save_every"]

    def checkpoint_steps(self, run: str) -> list[int]:
        every = self.run_params(run)["save_every"]
        return [k * every for k in range(1, self.num_checkpoints(run) + 1)]

    def ckpt_step(self, run: str, k: int) -> int:
        """The optimizer step of checkpoint k of a run (0 for the SFT model)."""
        return 0 if run == "sft" else int(k) * self.run_params(run)["save_every"]

    def precompute_ref(self) -> bool:
        return bool(self.config["align"].get("precompute_ref", True))

    def align_data(self, run: str) -> str:
        """The training records of a run: data/<rm_labels|p2r>/train.jsonl."""
        return self.res(f"data/{self.run_params(run)['data']}/train.jsonl")

    def ckpt_dir(self, run: str, k: int) -> str:
        return self.res(f"models/align/{run}/ckpt{k}")

    def ckpt_config(self, run: str, k: int) -> str:
        """config.json of checkpoint k (1..num_checkpoints(run)) of an alignment run."""
        return f"{self.ckpt_dir(run, k)}/config.json"

    def align_ckpt_configs(self, run: str) -> list[str]:
        return [self.ckpt_config(run, k) for k in range(1, self.num_checkpoints(run) + 1)]

    def align_metrics(self, run: str) -> str:
        return self.res(f"models/align/{run}/train_metrics.json")

    def ref_cache_name(self, run: str) -> str:
        """``<data>_t<temp>_l<max_len>_g<max_gen_len>.jsonl``: runs with the same data, temp and
        truncation share it. The temp is written with repr() so that the name gives back the
        float."""
        p = self.run_params(run)
        return (f"{p['data']}_t{float(p['temp'])!r}_l{int(p['max_len'])}"
                f"_g{int(p['max_gen_len'])}.jsonl")

    def ref_cache_path(self, run: str) -> str:
        return self.res(f"data/ref_logps/{self.ref_cache_name(run)}")

    def ref_cache_inputs(self, run: str) -> list[str]:
        """[the cache] with align.precompute_ref, else [] (the trainer runs the reference)."""
        return [self.ref_cache_path(run)] if self.precompute_ref() else []

    def align_run_regex(self) -> str:
        return _regex(self.align_runs())

    def align_data_regex(self) -> str:
        return _regex(sorted({self.run_params(r)["data"] for r in self.align_runs()}))

    # ---- evaluation ------------------------------------------------------------------------------

    def eval_checkpoints(self, run: str) -> list[int]:
        """The evaluated checkpoints of a run: 1..min(eval.checkpoints, its checkpoint count)."""
        n = min(int(self.config["eval"].get("checkpoints", 0)), self.num_checkpoints(run))
        return list(range(1, n + 1))

    def eval_run_regex(self) -> str:
        """The run wildcard of samples/ and eval/: sft or an alignment run."""
        return _regex(["sft", *self.align_runs()])

    def ckpt_model(self, run: str, k: int) -> str:
        """config.json of the model behind samples/<run>/ckpt<k>: SFT for sft/ckpt0, else the
        run's checkpoint k (1..its checkpoint count)."""
        k = int(k)
        if run == "sft":
            if k != 0:
                raise ValueError(f"sft/ckpt{k}: the SFT model is checkpoint 0 only (sft/ckpt0)")
            return self.res("models/sft/config.json")
        n = self.num_checkpoints(run)
        if not 1 <= k <= n:
            raise ValueError(f"{run}/ckpt{k}: run {run} has checkpoints ckpt1..ckpt{n} "
                             "(its step 0 is the SFT model: sft/ckpt0)")
        return self.ckpt_config(run, k)

    def eval_sample_params(self) -> dict:
        """The eval section as sample.py takes it (without the keys that do not change
        samples)."""
        drop = ("checkpoints", "score_batch_size", "val_prompts", "select_by")
        return {k: v for k, v in self.config["eval"].items() if k not in drop}

    def eval_score_params(self) -> dict:
        """The sizes of the scoring and log-prob passes of eval_checkpoint."""
        keys = ("max_len", "score_batch_size", "temperature")
        return {k: self.config["eval"][k] for k in keys if k in self.config["eval"]}

    def inference_dtype_arg(self) -> str:
        """``--dtype <model.dtype>`` for the inference rules (sampling, labelling, evaluation),
        which load models in that precision ('' for fp32, the saved models' own)."""
        d = self.config["model"]["dtype"]
        return "" if d == "fp32" else f"--dtype {d}"

    def eval_num_prompts_arg(self) -> str:
        n = self.config["eval"].get("num_prompts")
        return f"--num-prompts {int(n)}" if n else ""

    def eval_run_meta(self) -> str:
        """``{run: {configuration, seed, loss, data, num_contrastive}}`` in config order (JSON),
        for the summary and the study."""
        meta = {}
        for run, conf, seed in self.runs():
            p = self.run_params(run)
            meta[run] = {"configuration": conf, "seed": seed, "loss": p["loss"],
                         "data": p["data"], "num_contrastive": p.get("num_contrastive", 2)}
        return json.dumps(meta, separators=(",", ":"))  # not as_json: keep the run order

    def eval_split(self) -> dict:
        """How the evaluated test prompts are split: the first ``eval.val_prompts`` pick each
        run's checkpoint (by ``eval.select_by``), the others report it."""
        e = self.config["eval"]
        n, v = e.get("num_prompts"), int(e.get("val_prompts") or 0)
        if n is not None and v >= int(n):
            raise ValueError(f"eval.val_prompts = {v} leaves no report prompt of "
                             f"eval.num_prompts = {n}")
        return {"val_prompts": v, "select_by": e.get("select_by", "reward")}

    def comparisons(self) -> list[tuple[str, str]]:
        """``study.compare``: pairs of configurations ``[a, b]`` (the difference a - b)."""
        confs = self.configurations()
        out = []
        for pair in (self.config.get("study") or {}).get("compare") or []:
            a, b = pair
            for c in (a, b):
                if c not in confs:
                    raise ValueError(f"study.compare: {c!r} is not a configuration "
                                     f"(those are {sorted(confs)})")
            out.append((a, b))
        return out

    # ---- targets -------------------------------------------------------------------------------

    def data_targets(self) -> list[str]:
        return [self.res(f"data/{kind}/{s}.jsonl") for kind in ("pref", "p2r")
                for s in SPLITS] + [self.res("data/stats.json")]

    def model_targets(self) -> list[str]:
        return [self.res("models/sft/config.json"), self.res("models/rm/config.json")]

    def label_targets(self) -> list[str]:
        return [self.res(f"data/rm_labels/{s}.jsonl") for s in SPLITS]

    def align_targets(self) -> list[str]:
        """Every run's checkpoints and train_metrics.json."""
        return [f for run in self.align_runs()
                for f in [*self.align_ckpt_configs(run), self.align_metrics(run)]]

    def eval_rewards_targets(self) -> list[str]:
        """Every run's per-prompt evaluation records (what the summary and the study read)."""
        return [self.res(f"eval/{run}/ckpt{k}/rewards.jsonl")
                for run in self.align_runs() for k in self.eval_checkpoints(run)]

    def study_targets(self) -> list[str]:
        return [self.res(f"study/{n}") for n in ("study.csv", "compare.csv", "study.png")]

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
