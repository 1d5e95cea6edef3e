"""Where an alignment run's checkpoints fall and what learning rate each was trained at.

Two ways to place checkpoints (``align.defaults``):

* ``save_every: S`` (exoflow's): checkpoint k at optimizer step k·S, k = 1..max_steps / S;
* ``saves_per_epoch: E`` with ``checkpoints: n`` (the original code's, exact-optimization
  ``src/align_stage/train.py``): its loop counts *micro*-steps (one per-process batch of
  ``micro_batch_size`` prompts) and saves ``ckpt<k>`` after micro-step k·I, where
  ``I = len(train_dataloader) // E`` (1 when the loader is shorter than E) and
  ``len(train_dataloader) = ceil(ceil(prompts / processes) / micro_batch_size)`` (a
  ``DistributedSampler`` pads every process to the same share). A save between two optimizer
  steps holds the weights of the last completed one, so ckpt k is the model after optimizer step
  ``floor(k·I / accumulation)``.

The learning-rate schedule decays over ``lr_horizon``: ``max_steps`` (exoflow's: the cosine
reaches 0 at the last step) or ``epoch`` (the original's ``num_train_epochs ·
ceil(len(train_dataloader) / accumulation)`` optimizer steps, of which the original trains
``max_iter_step / accumulation``).

For the paper's setup (43,835 helpful-base prompts, 4 processes × 8 prompts × accumulation 4 =
128 per step, E = 20): ``len = 1370``, ``I = 68`` micro-steps, checkpoints at optimizer steps
17, 34, ..., 170, a cosine over 343 steps.

Everything here is arithmetic on the planned sizes: no torch, no Snakemake; the training job
calls it with the number of prompts it read, the dry run and the tests with any number.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from .errors import ParamsError
from .runtime import gradient_accumulation_steps

__all__ = ["CheckpointAt", "Visits", "checkpoint_schedule", "loader_len", "lr_at",
           "lr_horizon_steps"]


@dataclass(frozen=True)
class CheckpointAt:
    """Checkpoint ``k``: the model after optimizer ``step``; ``epoch``: the fraction of the
    training prompts those steps drew (step × batch_size / prompts); ``lr``: the learning rate
    that step ``step`` applied (None for a scheduler not computed here); ``micro_step``: the
    original's micro-step counter at the save (saves_per_epoch only)."""

    k: int
    step: int
    epoch: float
    lr: float | None
    micro_step: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def loader_len(num_prompts: int, processes: int, micro_batch_size: int) -> int:
    """Micro-batches per process in one epoch, as the original's ``DistributedSampler`` +
    ``DataLoader`` (no drop_last) give them."""
    return math.ceil(math.ceil(num_prompts / processes) / micro_batch_size)


def lr_horizon_steps(params, num_prompts: int, processes: int) -> int:
    """The optimizer steps the learning-rate schedule decays over (``params.lr_horizon``)."""
    if params.lr_horizon == "max_steps":
        return int(params.max_steps)
    a = gradient_accumulation_steps(params.batch_size, params.micro_batch_size,
                                    processes)
    return math.ceil(loader_len(num_prompts, processes, params.micro_batch_size) / a)


def lr_at(step: int, peak: float, horizon: int, warmup: int, scheduler: str) -> float | None:
    """The learning rate optimizer step ``step`` (1-based) applies, as transformers'
    ``get_scheduler(scheduler)`` computes it after ``step - 1`` scheduler steps; None for a
    scheduler other than cosine, linear and constant."""
    t = step - 1
    if scheduler == "constant":
        return float(peak)
    if t < warmup:
        return float(peak) * t / max(1, warmup)
    progress = (t - warmup) / max(1, horizon - warmup)
    if scheduler == "cosine":
        return float(peak) * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if scheduler == "linear":
        return float(peak) * max(0.0, (horizon - t) / max(1, horizon - warmup))
    return None


def checkpoint_schedule(params, num_prompts: int, processes: int,
                        where: str = "align") -> list[CheckpointAt]:
    """The checkpoints of a run with ``params`` (:class:`exoflow.config.AlignParams`) on
    ``num_prompts`` training prompts and ``processes`` training processes; ParamsError naming
    ``where`` when the planned checkpoints do not fit in ``max_steps``."""
    if num_prompts < 1:
        raise ParamsError(f"{where}: no training prompts")
    a = gradient_accumulation_steps(params.batch_size, params.micro_batch_size,
                                    processes)
    micro: list[int | None]
    if params.saves_per_epoch is None:
        steps = [k * params.save_every for k in range(1, params.num_checkpoints + 1)]
        micro = [None] * len(steps)
    else:
        n_loader = loader_len(num_prompts, processes, params.micro_batch_size)
        interval = max(n_loader // params.saves_per_epoch, 1)
        micro = [k * interval for k in range(1, params.num_checkpoints + 1)]
        steps = [m // a for m in micro]
        if steps[0] < 1:
            raise ParamsError(
                f"{where}: saves_per_epoch {params.saves_per_epoch} on {num_prompts} prompts "
                f"saves every {interval} micro-batch(es), fewer than the {a} of one optimizer "
                "step, so ckpt1 would be the SFT model; lower saves_per_epoch or use save_every")
        if steps[-1] > params.max_steps:
            fit = sum(1 for s in steps if s <= params.max_steps)
            raise ParamsError(
                f"{where}: saves_per_epoch {params.saves_per_epoch} on {num_prompts} prompts "
                f"({processes} process(es) x {params.micro_batch_size} per micro-batch, "
                f"accumulation {a}) puts ckpt{params.num_checkpoints} at optimizer step "
                f"{steps[-1]}, after max_steps {params.max_steps} ({fit} checkpoint(s) fit); "
                "lower checkpoints or raise max_steps")
    horizon = lr_horizon_steps(params, num_prompts, processes)
    if params.lr_horizon == "epoch" and params.max_steps > horizon:
        raise ParamsError(
            f"{where}: lr_horizon epoch decays the learning rate over one epoch, and one epoch "
            f"of {num_prompts} prompts is {horizon} optimizer step(s), fewer than max_steps "
            f"{params.max_steps} (the original stops at the end of its epoch); set max_steps "
            f"<= {horizon} or lr_horizon: max_steps")
    return [CheckpointAt(k=k, step=s, epoch=s * params.batch_size / num_prompts,
                         lr=lr_at(s, params.lr, horizon, params.warmup_steps,
                                  params.lr_scheduler), micro_step=m)
            for k, (s, m) in enumerate(zip(steps, micro), start=1)]


@dataclass(frozen=True)
class Visits:
    """What sets the records a run visits: its seed, optimizer steps, records per step and
    whether batches are grouped by length. As a name: ``v<seed>s<steps>b<batch><g|r>``."""

    seed: int
    steps: int
    batch: int
    grouped: bool

    @property
    def name(self) -> str:
        return f"v{self.seed}s{self.steps}b{self.batch}{'g' if self.grouped else 'r'}"

    @classmethod
    def from_name(cls, name: str) -> Visits:
        m = re.fullmatch(r"v(\d+)s(\d+)b(\d+)([gr])", name)
        if not m:
            raise ValueError(f"{name!r} is not a visit name (v<seed>s<steps>b<batch><g|r>)")
        return cls(int(m[1]), int(m[2]), int(m[3]), m[4] == "g")
