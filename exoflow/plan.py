"""The workflow's plan, from a validated config: which runs exist and with which parameters,
their checkpoint steps, file names, evaluation targets and the command prefixes of GPU jobs.

No torch or Snakemake import: ``rules/common.smk`` builds one :class:`Plan` while the Snakefile
is parsed and its input functions call it; the tests call it directly.

Paths are relative to the results folder ``results/<run_name>/`` (:attr:`Plan.results`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import gpus

__all__ = ["Plan", "as_json", "rule_name"]

SPLITS = ("train", "test")
RESERVED_RUNS = ("sft", "dataset")  # eval/sft/ckpt0 is the SFT model, eval/dataset the data


def as_json(obj) -> str:
    """A config section as one JSON word for a script's command line (sorted keys)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def rule_name(prefix: str, run: str) -> str:
    """``<prefix>_<run>`` with the characters a rule name cannot hold replaced by ``_``:
    ``rule_name("train_align", "exo-rw_nc2") == "train_align_exo_rw_nc2"``."""
    return prefix + "_" + re.sub(r"\W", "_", run)


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

    def gpus(self) -> int:
        return int(self.config["engine"].get("gpus") or 0)

    def engine_params(self) -> dict:
        """``engine`` + the model's ``dtype`` + the top-level ``seed``: what a training script's
        ``--engine`` takes."""
        c = self.config
        return dict(c["engine"], dtype=c["model"]["dtype"], seed=c["seed"])

    def ref_engine_params(self) -> dict:
        """The engine keys that set the precision the alignment runs train in (and so the one
        the reference log-probs are computed in); the others would only cause re-runs."""
        e = self.config["engine"]
        return {"deepspeed": e.get("deepspeed"), "gpus": min(self.gpus(), 1),
                "dtype": self.config["model"]["dtype"]}

    def train_launcher(self) -> str:
        """Multi-process training when the job has more than one GPU: torch.distributed.run
        (torchrun), not the deepspeed launcher, which drops CUDA_VISIBLE_DEVICES (so it would
        ignore the GPUs SLURM or the lock pool gave the job) and always binds port 29500. The
        Trainer still runs DeepSpeed ZeRO from engine.deepspeed."""
        n = self.gpus()
        if n <= 1:
            return self.python
        return f"{self.python} -m torch.distributed.run --standalone --nproc_per_node {n}"

    def gpu_prefix(self, n: int) -> str:
        """Shell prefix giving a job ``n`` GPUs of its own on a workstation: exoflow.gpus takes
        ``n`` free devices from a file-lock pool, sets CUDA_VISIBLE_DEVICES and runs the command
        ('' when n is 0; unchanged where CUDA_VISIBLE_DEVICES is already set, e.g. by SLURM)."""
        return gpus.prefix(n, self.python)

    # ---- alignment runs ------------------------------------------------------------------------

    def align_runs(self) -> list[str]:
        """The alignment run names, in config order."""
        return list(self.config["align"]["runs"])

    def run_params(self, run: str) -> dict:
        """A run's resolved parameters: ``align.defaults`` updated with its entry."""
        return dict(self.config["align"]["defaults"], **self.config["align"]["runs"][run])

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
        drop = ("checkpoints", "score_batch_size")
        return {k: v for k, v in self.config["eval"].items() if k not in drop}

    def eval_score_params(self) -> dict:
        """The sizes of the scoring and log-prob passes of eval_checkpoint."""
        keys = ("max_len", "score_batch_size")
        return {k: self.config["eval"][k] for k in keys if k in self.config["eval"]}

    def eval_num_prompts_arg(self) -> str:
        n = self.config["eval"].get("num_prompts")
        return f"--num-prompts {int(n)}" if n else ""

    def eval_run_meta(self) -> str:
        """``{run: {loss, data, num_contrastive}}`` in config order (JSON), for the summary."""
        meta = {}
        for run in self.align_runs():
            p = self.run_params(run)
            meta[run] = {"loss": p["loss"], "data": p["data"],
                         "num_contrastive": p.get("num_contrastive", 2)}
        return json.dumps(meta, separators=(",", ":"))  # not as_json: keep the run order

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
