"""The workflow's plan, from a config: which runs exist and with which parameters, their
checkpoints, file names, evaluation targets and the command prefixes of GPU jobs.

No torch or Snakemake import: ``rules/common.smk`` builds one :class:`Plan` while the Snakefile
is parsed and its input functions call it; the tests call it directly. Every value comes from
the parameter objects of :mod:`exoflow.config` (``Plan.cfg``), so no default is stated here.

Paths are relative to the results folder ``results/<run_name>/`` (:attr:`Plan.results`).
"""

from __future__ import annotations

from ..config import Config
from .launch import Launch
from .layout import Layout
from .runs import Runs, expand_grid, rule_name
from .targets import Targets

__all__ = ["RESERVED_RUNS", "Plan", "expand_grid", "rule_name"]

RESERVED_RUNS = ("sft", "dataset")  # eval/sft/ckpt0 is the SFT model, eval/dataset the data


class Plan(Runs, Layout, Launch, Targets):
    """Everything the rules need to know, computed from ``config`` (a mapping, validated into
    :class:`exoflow.config.Config`) and the shell word that runs Python (``python``: the
    interpreter Snakemake runs in, quoted). Its parts, one concern each: :class:`Runs`,
    :class:`Layout`, :class:`Launch`, :class:`Targets`."""

    def __init__(self, config: dict, python: str = "python"):
        self.cfg = config if isinstance(config, Config) else Config.from_dict(config)
        self.python = python
        for run in self.align_runs():
            self.run_params(run)  # every run resolves to valid parameters

    def data_params(self, split: str):
        """The data section as one split sees it (:meth:`exoflow.config.DataParams.for_split`)."""
        return self.cfg.data.for_split(split)

    def is_synthetic(self) -> bool:
        return self.cfg.data.source == "synthetic"

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

    def scratch_max_len(self) -> int | None:
        """The scratch tokenizer's model_max_length: the scratch model's positions."""
        s = self.cfg.model.scratch
        return s.max_position_embeddings if s else None

    def precompute_ref(self) -> bool:
        return self.cfg.align.precompute_ref
