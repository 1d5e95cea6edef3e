"""Config ``align``: one alignment run's parameters (:class:`AlignParams`), the keys a config
sets over them (``align.defaults``: :class:`AlignDefaults`; each ``align.runs`` entry:
:class:`AlignRun`, which must name its loss and data), and the section. A run's parameters are
``align.defaults`` updated with its entry (:meth:`exoflow.plan.Plan.run_params`). No torch, no
Snakemake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ParamsError
from .fields import RUN_NAME, Section, param, partial_section
from .training import OptimParams, ResponseEOS

__all__ = ["ALIGN_DATA", "AlignDefaults", "AlignParams", "AlignRun", "AlignSection"]

ALIGN_DATA = ("rm_labels", "p2r")


@dataclass(kw_only=True)
class AlignParams(OptimParams, ResponseEOS):
    """One alignment run: ``align.defaults`` updated with the run's entry."""

    SECTION: ClassVar[str] = "align.defaults"
    loss: str | dict = param(help="Alignment loss: its name, or {name: <name>, <its own "
                             "hyperparameter>: <value>} (loss.<hyperparameter> below; "
                             "beta_pi, beta_r and pref_log_eps are set beside it).",
                             schema={"$loss": True})
    data: str = param(help="Alignment data: rm_labels (SFT samples + RM rewards) or p2r (the "
                      "preference pairs as rewards [1, 0]).", choices=ALIGN_DATA)
    max_steps: int = param(help="Optimizer steps trained (the original: max_iter_step / "
                           "gradient accumulation = 700 / 4 = 175).", minimum=1)
    save_every: int | None = param(None, "Steps between checkpoints: ckpt k is saved at step k "
                                   "x save_every, and max_steps must be a multiple of it "
                                   "(exoflow's way); null: saves_per_epoch.", minimum=1)
    saves_per_epoch: int | None = param(None, "The original's num_save_checkpoint: a checkpoint "
                                        "every len(train_dataloader) // saves_per_epoch "
                                        "micro-batches, mapped to optimizer steps as its "
                                        "micro-step counter does (exoflow.schedule); the steps "
                                        "depend on the data size. Needs checkpoints.", minimum=1)
    checkpoints: int | None = param(None, "With saves_per_epoch: how many checkpoints the run "
                                    "saves (ckpt1..ckptN; the original keeps the 10 that fall "
                                    "before max_iter_step); with save_every: null (max_steps / "
                                    "save_every).", minimum=1)
    lr_horizon: str = param("max_steps", "What the learning-rate schedule decays over: "
                            "max_steps (reaches its end at the last step) or epoch (one epoch "
                            "of the training prompts, as the original: the run stops part-way "
                            "down the cosine).", choices=("max_steps", "epoch"))
    beta_r: float = param(0.5, "Target temperature: q = softmax(r / beta_r) for *-rw.",
                          exclusive_minimum=0)
    beta_pi: float = param(0.5, "Policy scores s = beta_pi * (log pi - log pi_sft).",
                           exclusive_minimum=0)
    temp: float = param(0.8, "tau: log-probs of logits / tau, for the policy and the "
                        "reference.", exclusive_minimum=0)
    pref_log_eps: float = param(-10.0, "log q of the losers for *-pref (the original code's "
                                "-10).", exclusive_maximum=0)
    num_contrastive: int = param(2, "Candidates per group N; K (per prompt) must be a multiple "
                                 "of N.", minimum=2)
    warmup_steps: int = param(0, "Linear warmup steps from 0.", minimum=0)

    def check(self):
        super().check()
        # the shape here; the loss itself (its name, hyperparameters, N) where the losses are
        # known: exoflow.losses.make_loss, called by the plan and by the training job, so
        # that editing a loss re-runs the alignment jobs only (exoflow.codehash)
        if isinstance(self.loss, dict):
            if not isinstance(self.loss.get("name"), str):
                raise ParamsError(f"{self.where('loss')}: a mapping needs the loss's name "
                                  f"(loss: {{name: ipo, tau: 0.1}}), got {self.loss!r}")
        elif not isinstance(self.loss, str):
            raise ParamsError(f"{self.where('loss')} must be a loss's name or a mapping "
                              f"{{name: ..., <hyperparameter>: ...}}, got {self.loss!r}")
        if (self.save_every is None) == (self.saves_per_epoch is None):
            raise ParamsError(f"{self.where()}: set exactly one of save_every (checkpoints every "
                              "N optimizer steps) and saves_per_epoch (the original's "
                              f"checkpoints), got save_every {self.save_every}, saves_per_epoch "
                              f"{self.saves_per_epoch}")
        if self.save_every is not None:
            if self.checkpoints is not None:
                raise ParamsError(f"{self.where()}: checkpoints goes with saves_per_epoch; with "
                                  "save_every the run has max_steps / save_every checkpoints "
                                  "(set checkpoints: null)")
            if self.max_steps % self.save_every:
                raise ParamsError(
                    f"{self.where()}: max_steps {self.max_steps} is not a multiple of save_every "
                    f"{self.save_every}: the steps after the last checkpoint would be trained "
                    "and thrown away; make max_steps a multiple of save_every")
        elif self.checkpoints is None:
            raise ParamsError(f"{self.where()}: saves_per_epoch needs checkpoints (how many the "
                              "run saves, e.g. 10 as the original)")

    @property
    def loss_label(self) -> str:
        """The loss as tables show it: ``ipo`` or ``ipo(tau=0.05)``."""
        if not isinstance(self.loss, dict):
            return self.loss
        own = ", ".join(f"{k}={v}" for k, v in self.loss.items() if k != "name")
        return f"{self.loss['name']}({own})" if own else self.loss["name"]

    @property
    def num_checkpoints(self) -> int:
        if self.save_every is not None:
            return self.max_steps // self.save_every
        return int(self.checkpoints)

    def schedule(self) -> dict:
        return {"num_train_epochs": 1.0, "max_steps": int(self.max_steps),
                "warmup_steps": self.warmup_steps}


AlignDefaults = partial_section(
    AlignParams, "AlignDefaults", section="align.defaults",
    doc="Config ``align.defaults``: the keys every run takes unless its entry sets them.")
AlignRun = partial_section(
    AlignParams, "AlignRun", required=("loss", "data"),
    doc="One entry of ``align.runs``: the keys the run sets over ``align.defaults``.")


@dataclass(kw_only=True)
class AlignSection(Section):
    SECTION: ClassVar[str] = "align"
    defaults: AlignDefaults = param(help="What every run takes unless it overrides it (any "
                                    "key of an alignment run).")
    seeds: list[int] | None = param(None, "Every run is trained once per seed (default: "
                                    "[seed]); the run of seed s is <run>_s<s>, and <run> for "
                                    "the top-level seed.",
                                    schema={"minItems": 1, "items": {"type": "integer",
                                                                     "minimum": 0}})
    grid: list[dict] | None = param(None, "Sweeps: each {name: template, key: value or "
                                    "[values], ...} expands into one run per combination of "
                                    "the listed values, named by the template (e.g. "
                                    "'{loss}_nc{num_contrastive}').",
                                    schema={"items": {"type": "object", "required": ["name"],
                                                      "properties": {"name": {
                                                          "type": "string", "minLength": 1}}}})
    only: list[str] | None = param(None, "The exact set of runs (names of runs or grid "
                                   "points); replaces the runs of the config files it extends.")
    precompute_ref: bool = param(True, "Reference log-probs computed once per data set (a "
                                 "cache), not in every step.")
    ref_records: str = param("all", "The records the reference cache covers: all of the data "
                             "set (shared by every run on it), or visited: those a run's seed, "
                             "steps and batch visit (shared by the runs that visit the same "
                             "ones, e.g. EXO and DPO of one seed; with several seeds each seed "
                             "has its own, which costs more than all once max_steps covers "
                             "more than 1/seeds of an epoch).", choices=("all", "visited"))
    runs: dict[str, AlignRun] = param(factory=dict, help="Run name -> overrides of defaults; "
                                      "loss and data are required.", pattern=RUN_NAME)
