"""The training stages' parameters: what SFT, the RM and alignment share (the sequence layout,
the optimiser and its batches), config ``sft`` and ``rm``. No torch, no Snakemake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ParamsError
from .fields import Section, param

__all__ = ["LayoutParams", "OptimParams", "RMParams", "ResponseEOS", "SFTParams", "TrainParams"]


@dataclass(kw_only=True)
class LayoutParams(Section):
    """How a (prompt, response) pair is cut to fit (exoflow.batching.encode_pair)."""

    max_len: int = param(512, "Prompt + response tokens; the prompt is left-truncated to fit "
                         "(must exceed max_gen_len).", minimum=1)
    max_gen_len: int = param(200, "Response tokens kept (right-truncated).", minimum=1)

    def check(self):
        if not self.max_gen_len < self.max_len:
            raise ParamsError(f"{self.where()}: need max_gen_len < max_len (got "
                              f"{self.max_gen_len}, {self.max_len}) so that some prompt fits")

    def layout(self) -> LayoutParams:
        return self.project(LayoutParams)


@dataclass(kw_only=True)
class OptimParams(LayoutParams):
    """What every training stage (SFT, RM, alignment) shares: the paper's optimiser
    (exact-optimization src/*_stage/train.py: AdamW, betas (0.9, 0.95), no weight decay, cosine
    schedule, gradient clipping 1.0) and its batches."""

    lr: float = param(help="Peak learning rate (AdamW).", exclusive_minimum=0)
    batch_size: int = param(help="Examples per optimizer step, across all processes and "
                            "accumulation (RM: pairs; alignment: prompts).", minimum=1)
    micro_batch_size: int = param(help="Examples per process per forward pass; batch_size "
                                  "must be a multiple of it.", minimum=1)
    adam_beta1: float = param(0.9, "AdamW beta1 (the paper's 0.9).", minimum=0,
                              exclusive_maximum=1)
    adam_beta2: float = param(0.95, "AdamW beta2 (the paper's 0.95).", minimum=0,
                              exclusive_maximum=1)
    weight_decay: float = param(0.0, "AdamW weight decay (the paper: none).", minimum=0)
    lr_scheduler: str = param("cosine", "transformers scheduler name (cosine, linear, "
                              "constant, ...).")
    max_grad_norm: float = param(1.0, "Gradient clipping norm (0: no clipping).", minimum=0)
    group_by_length: bool = param(True, "Batches of examples of similar length (seeded order), "
                                  "which pads less than uniformly random batches (false).")

    def schedule(self) -> dict:
        """The length of the run and its warmup, as TrainingArguments takes them."""
        raise NotImplementedError


@dataclass(kw_only=True)
class TrainParams(OptimParams):
    """Config ``sft`` or ``rm``."""

    epochs: float = param(help="Passes over the training set (ignored when max_steps is set).",
                          exclusive_minimum=0)
    warmup_ratio: float = param(0.0, "Fraction of the steps with a linear warmup from 0.",
                                minimum=0, exclusive_maximum=1)
    max_steps: int | None = param(None, "Stop after this many optimizer steps (null: run the "
                                  "epochs).", minimum=1)

    def schedule(self) -> dict:
        return {"num_train_epochs": float(self.epochs),
                "max_steps": -1 if self.max_steps is None else int(self.max_steps),
                "warmup_steps": self.warmup_ratio or 0}  # a float < 1 is a ratio


@dataclass(kw_only=True)
class ResponseEOS(Section):
    """Where EOS goes when a response is cut (the stages that train on EOS: SFT, alignment and
    its reference log-probs; the RM's head reads the last response token, never an EOS)."""

    eos_after_cut: bool = param(True, "Append EOS after the response is cut to max_gen_len, so "
                                "every sequence ends in EOS; false: append it before the cut, "
                                "as the original, so a response of max_gen_len tokens or more "
                                "has none.")


@dataclass(kw_only=True)
class SFTParams(TrainParams, ResponseEOS):
    SECTION: ClassVar[str] = "sft"


@dataclass(kw_only=True)
class RMParams(TrainParams):
    SECTION: ClassVar[str] = "rm"
