"""What each target of the Snakefile asks for (``data``, ``models``, ``labels``, ``eval_all``, ``all``) and the judge's targets.

A part of :class:`exoflow.plan.Plan` (a mixin: its methods read ``self.cfg`` and call the
other parts' methods)."""

from __future__ import annotations

import os

from ..errors import ExoflowError

__all__ = ["Targets"]

SPLITS = ("train", "test")



class Targets:
    """The files each target asks for."""

    def judge_enabled(self) -> bool:
        return self.cfg.judge.base_url is not None

    def judge_checkpoints(self, run: str) -> list[int]:
        """The judged checkpoints of a run (judge.checkpoints, else every evaluated one)."""
        return list(self.cfg.judge.checkpoints or self.eval_checkpoints(run))

    def judge_targets(self) -> list[str]:
        """Every (run, checkpoint, baseline)'s win_rate.json, and the SFT model's against the
        dataset's chosen responses."""
        j = self.cfg.judge
        out = [self.path("win_rate", run=run, ckpt=k, baseline=b) for run in self.align_runs()
               for k in self.judge_checkpoints(run) for b in j.baselines]
        if "chosen" in j.baselines:
            out.insert(0, self.path("win_rate", run="sft", ckpt=0, baseline="chosen"))
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

    def data_targets(self) -> list[str]:
        return [self.path(kind, split=s) for kind in ("pref", "p2r")
                for s in SPLITS] + [self.path("stats_all")]

    def model_targets(self) -> list[str]:
        return [self.path("sft"), self.path("rm")]

    def label_targets(self) -> list[str]:
        return [self.path("rm_labels", split=s) for s in SPLITS]

    def align_targets(self) -> list[str]:
        """Every run's checkpoints and metrics.json."""
        return [f for run in self.align_runs()
                for f in [*self.align_ckpt_configs(run), self.align_metrics(run)]]

    def eval_rewards_targets(self) -> list[str]:
        """Every run's per-prompt evaluation records (what the summary and the study read)."""
        return [self.path("eval_rewards", run=run, ckpt=k)
                for run in self.align_runs() for k in self.eval_checkpoints(run)]

    def eval_checkpoint_targets(self) -> list[str]:
        return [self.path("eval", run=run, ckpt=k)
                for run in self.align_runs() for k in self.eval_checkpoints(run)]

    def eval_all_targets(self) -> list[str]:
        """The summary and every file it is made from: Snakemake does not re-make a missing
        intermediate file while what was made from it is up to date, so a deleted checkpoint
        evaluation is only redone (and the summary with it) when it is itself a target."""
        return [self.path("summary_csv"), self.path("summary_png"),
                self.path("eval", run="sft", ckpt=0), self.path("dataset_eval"),
                *self.eval_checkpoint_targets()]

    def all_targets(self) -> list[str]:
        return (self.data_targets() + self.model_targets() + self.label_targets()
                + self.eval_all_targets())
