"""The Hugging Face ``Trainer`` every training stage subclasses, and its arguments.

* :func:`make_training_args`: batch semantics (``batch_size`` per optimizer step across all
  processes, ``micro_batch_size`` per process per forward, the rest gradient accumulation),
  precision (``dtype``: bf16 autocast on the CPU or a GPU, fp16 with loss scaling on a GPU only),
  DeepSpeed when ``engine.deepspeed`` names a ZeRO config, Trainer checkpoints every
  ``checkpoint_every`` steps into the *work* folder, TensorBoard logs;
* :class:`ExoTrainer`: per-step records that survive a resume, non-finite losses and gradients
  refused, length-grouped batches whose order depends on the seed alone, resuming that reloads
  the weights by their saved names;
* :func:`step_records`, :func:`loss_curve`, :func:`mean_train_loss`, :func:`run_info`: what a
  stage's ``metrics.json`` says about its run.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from .config import OptimParams, Runtime
from .errors import ExoflowError, NonFiniteError, ParamsError
from .lora import is_peft
from .modeling import parameter_counts
from .order import visit_order
from .runtime import (
    die_with_launcher,
    eval_shard,
    gradient_accumulation_steps,
    on_cpu,
    single_process_env,
    world_size,
)

__all__ = ["ExoTrainer", "loss_curve", "make_training_args", "mean_train_loss", "run_info",
           "step_records"]


def _checkpointing_args(on: bool) -> dict:
    """Activation checkpointing in TrainingArguments' words: ``activation_checkpointing`` from
    transformers 5.24 on, ``gradient_checkpointing`` before (5.24 keeps it as a deprecated
    alias)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": on,
            f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if on else None}


def make_training_args(params: OptimParams, rt: Runtime, work_dir, log_dir=None,
                       n_procs: int | None = None, **overrides) -> TrainingArguments:
    """``TrainingArguments`` for a stage (``params``: its section, whose :meth:`schedule` gives
    the length of the run and its warmup). ``log_dir`` is where TensorBoard writes (see
    :func:`attach_tensorboard`); ``overrides`` go to ``TrainingArguments`` last."""
    die_with_launcher()
    engine = rt.engine
    if engine.deepspeed:
        single_process_env()
    n_procs = world_size() if n_procs is None else n_procs
    cpu = on_cpu(rt)
    if cpu and rt.dtype == "fp16":
        raise ParamsError("model.dtype fp16 needs a GPU (its loss scaling is CUDA's); on the CPU "
                          "use bf16 or fp32")
    kwargs: dict[str, Any] = dict(
        output_dir=str(work_dir),
        per_device_train_batch_size=params.micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps(
            params.batch_size, params.micro_batch_size, n_procs),
        learning_rate=params.lr,
        **params.schedule(),
        lr_scheduler_type=params.lr_scheduler,
        adam_beta1=params.adam_beta1,
        adam_beta2=params.adam_beta2,
        weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        bf16=rt.dtype == "bf16",  # autocast (CPU or GPU), fp32 master weights
        fp16=rt.dtype == "fp16",
        use_cpu=cpu,
        deepspeed=engine.deepspeed,
        **_checkpointing_args(engine.gradient_checkpointing),
        seed=rt.seed,
        logging_strategy="steps",
        logging_steps=engine.logging_steps,
        logging_first_step=True,
        report_to=["tensorboard"] if log_dir is not None else "none",
        eval_strategy="no",
        save_strategy="steps",
        save_steps=engine.checkpoint_every,
        # Rotation deletes the older checkpoint only after the new one is complete, so one is enough.
        save_total_limit=1,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=not cpu,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
        skip_memory_metrics=True,
        # A NaN loss must stop the run (ExoTrainer), never be logged as the previous average.
        logging_nan_inf_filter=False,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' ``LengthGroupedSampler`` (megabatches of 50 batches, each sorted by length,
    in random order) whose order depends only on (seed, epoch) (:func:`exoflow.order.visit_order`),
    so a resumed run skips exactly the batches it already trained on."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=list(lengths))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(visit_order(len(self.lengths), self.seed, self.batch_size, self.lengths,
                                self.epoch))


class SeededRandomSampler(Sampler):
    """A random order that depends only on (seed, epoch) (:func:`exoflow.order.visit_order`):
    the records a run visits can be known before it runs (the reference cache's
    ``align.ref_records: visited``)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(visit_order(self.n, self.seed, 1, None, self.epoch))


class StepRecorder(TrainerCallback):
    """Appends one ``{"step", "step_loss", ...}`` record per optimizer step to the state's
    log history (the sums :meth:`ExoTrainer.add_step_metric` collected, averaged over
    processes)."""

    def __init__(self, trainer: ExoTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.step_ends.append(time.perf_counter())
        sums, self.trainer._step_sums = self.trainer._step_sums, {}
        if not sums:
            return
        names = sorted(sums)
        t = torch.stack([sums[k].to(args.device) for k in names])
        if args.world_size > 1:
            t = self.trainer.accelerator.reduce(t, reduction="mean")
        rec = {k: float(v) for k, v in zip(names, t.tolist())}
        state.log_history.append({"step": int(state.global_step), **rec})


class ExoTrainer(Trainer):
    """``transformers.Trainer`` with what every stage needs; subclass this one.

    ``group_lengths``: one length per training example; when given, batches are drawn by
    :class:`SeededLengthGroupedSampler` (examples of similar length together, seeded order).
    ``lr_horizon``: the optimizer steps the learning-rate schedule decays over (default: the
    steps trained). ``seeded_order``: random batches in :class:`SeededRandomSampler`'s order
    (else transformers' own random sampler).

    Every optimizer step's loss (and the metrics a subclass adds with :meth:`add_step_metric`),
    averaged over processes, is kept in ``state.log_history`` as ``{"step", "step_loss",
    ...}``: it is saved with each Trainer checkpoint and restored on resume, so
    :func:`step_records` covers every step of a resumed run exactly as of an uninterrupted one.

    A micro-batch loss or a gradient norm that is not finite stops the run with a
    :class:`~exoflow.errors.NonFiniteError` naming the step and ``run_name`` before the
    optimizer applies it (with fp16 loss scaling an infinite gradient norm is the scaler's
    business: that step is skipped, not refused).
    """

    def __init__(self, *args, group_lengths=None, run_name: str = "training",
                 lr_horizon: int | None = None, seeded_order: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_lengths, self.seeded_order = group_lengths, seeded_order
        self.lr_horizon = lr_horizon
        self.run_name = run_name
        self._step_sums: dict = {}
        self.step_ends: list[float] = []  # perf_counter() at the end of each optimizer step
        self.resumed_from: str | None = None
        self.add_callback(StepRecorder(self))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # lr_horizon: the steps the schedule decays over when they are not the steps trained
        # (the original's cosine over one epoch, exoflow.schedule.lr_horizon_steps)
        return super().create_scheduler(self.lr_horizon or num_training_steps, optimizer)

    def _non_finite(self, what: str, value) -> None:
        raise NonFiniteError(
            f"{self.run_name}: {what} is {value} at optimizer step {self.state.global_step + 1}"
            "; check the training data for NaN/inf or extreme values and lower the lr "
            "(no checkpoint of this step was written)")

    def add_step_metric(self, name: str, value) -> None:
        """Add a micro-batch's ``value`` (a 0-d tensor) to this step's ``name``."""
        v = value.detach().float()
        self._step_sums[name] = self._step_sums[name] + v if name in self._step_sums else v

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(torch.isfinite(loss).all()):
            self._non_finite("the training loss", float(loss))
        self.add_step_metric("step_loss", loss)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if norm is not None and not self.args.fp16:
            value = float(norm)
            if not math.isfinite(value):
                self._non_finite("the gradient norm", value)
        return norm

    def _get_train_sampler(self, train_dataset=None):
        if train_dataset is not None and train_dataset is not self.train_dataset:
            return super()._get_train_sampler(train_dataset)
        if self.group_lengths is None:
            if self.seeded_order:
                return SeededRandomSampler(len(self.train_dataset), seed=self.args.seed)
            return super()._get_train_sampler(train_dataset)
        # One optimizer step's examples across all processes (accelerate deals the sampler's
        # micro-batches out in turn), so n processes see the order one process does.
        return SeededLengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps
            * self.args.world_size, self.group_lengths, seed=self.args.seed)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers 5.x saves some models with their hub key names (GPT-NeoX: lm_head ->
        # embed_out) but resumes with a non-strict load_state_dict that skips the renaming,
        # so lm_head silently kept its initial weights (huggingface/transformers#43701).
        # DeepSpeed resumes from its own module states and is not affected.
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = model if model is not None else self.model
        if not is_peft(target):  # a LoRA checkpoint holds the adapters, which peft loads
            reload_weights(target, resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        # transformers 5.17 loads the optimizer state onto args.device when several processes
        # train (5.24 no longer does), which on the CPU is torch.device("cpu:0"); with torch
        # 2.11 that load fails ("don't know how to restore ... cpu:0"), so a resumed
        # multi-process CPU run died (measured with 5.17 + 2.11). On the CPU every such
        # location is plain "cpu".
        if checkpoint is None or self.args.device.type != "cpu":
            return super()._load_optimizer_and_scheduler(checkpoint)
        load = torch.load

        def cpu_load(*args, **kwargs):
            where = kwargs.get("map_location")
            if isinstance(where, (str, torch.device)) and torch.device(where).type == "cpu":
                kwargs["map_location"] = "cpu"
            return load(*args, **kwargs)

        torch.load = cpu_load
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            torch.load = load

    def eval_model(self):
        """The trained module for a no-grad evaluation pass (eval mode, on the training
        device)."""
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        return model

    def eval_batches(self, examples: list[dict], batch_size: int):
        """This process's share of ``examples`` (:func:`~exoflow.runtime.eval_shard`), collated
        in batches of ``batch_size`` on the training device, under no_grad and the training
        precision's autocast (sum the results with :func:`~exoflow.runtime.reduce_sums`)."""
        idx = eval_shard(self, len(examples))
        with torch.no_grad(), self.accelerator.autocast():
            for i in range(0, len(idx), batch_size):
                batch = self.data_collator([examples[j] for j in idx[i:i + batch_size]])
                yield {k: v.to(self.args.device) for k, v in batch.items()}


def reload_weights(model, folder) -> None:
    """Load a ``save_pretrained`` folder into ``model`` in place, through ``from_pretrained``'s
    key conversions, refusing any missing or unexpected key."""
    dtype = next(model.parameters()).dtype
    fresh = type(model).from_pretrained(str(folder), dtype=dtype)
    with torch.no_grad():
        model.load_state_dict(fresh.state_dict(), strict=True)
    del fresh


def trim_tensorboard(log_dir, last_step: int | None = None) -> int:
    """Rewrite ``log_dir``'s TensorBoard events as one file holding each (tag, step) once, the
    latest written, in step order: a killed run's steps are never shown beside the ones that
    replace them. ``last_step``: drop the steps after it (the checkpoint a resumed run starts
    from; 0 drops all: a run that starts over). Returns the values kept."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    files = sorted(Path(log_dir).glob("events.out.tfevents.*"), key=lambda f: f.stat().st_mtime)
    if not files:
        return 0
    latest: dict = {}
    meta: dict = {}  # a tag's plugin metadata: written with its first value only
    for f in files:
        for raw in RawEventFileLoader(str(f)).Load():  # as written (no format migration)
            e = event_pb2.Event.FromString(raw)
            if e.WhichOneof("what") != "summary":
                continue
            for v in e.summary.value:
                if v.HasField("metadata") and v.tag not in meta:
                    meta[v.tag] = v.metadata
                if last_step is None or e.step <= last_step:
                    latest[(v.tag, e.step)] = (e.wall_time, v)
    for f in files:
        f.unlink()
    if latest:
        writer, first = EventFileWriter(str(log_dir)), set()
        for (tag, step), (wall, v) in sorted(latest.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            value = summary_pb2.Summary.Value()
            value.CopyFrom(v)
            if tag not in first and tag in meta:
                value.metadata.CopyFrom(meta[tag])
            first.add(tag)
            writer.add_event(event_pb2.Event(wall_time=wall, step=step,
                                             summary=summary_pb2.Summary(value=[value])))
        writer.close()
    return len(latest)


def tensorboard_dir(trainer):
    """Where the Trainer's TensorBoard callback writes (None without one)."""
    handler = getattr(trainer, "callback_handler", None)
    for cb in getattr(handler, "callbacks", ()):
        if isinstance(cb, TensorBoardCallback):
            return cb.logging_dir
    return None


def attach_tensorboard(trainer, log_dir) -> None:
    """Point the Trainer's TensorBoard callback at ``log_dir`` (not ``<output_dir>/runs``)."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = str(log_dir)


def step_records(trainer) -> list[dict]:
    """One ``{"step", "step_loss", ...}`` per optimizer step, in step order (a resumed run's
    records before its checkpoint come from the checkpoint's saved state)."""
    recs = {}
    for e in trainer.state.log_history:
        if "step_loss" in e and "step" in e:
            recs[int(e["step"])] = e  # a step redone after a resume replaces its record
    return [recs[s] for s in sorted(recs)]


def loss_curve(trainer) -> list[dict]:
    """Every optimizer step: ``step``, ``loss`` and the metrics a stage added (each the mean
    over the step's micro-batches and processes; complete after a resume)."""
    return [{("loss" if k == "step_loss" else k): (int(v) if k == "step" else float(v))
             for k, v in e.items()} for e in step_records(trainer)]


def mean_train_loss(trainer) -> float:
    """The mean of every step's loss: the Trainer's ``training_loss`` of an uninterrupted run,
    over the whole run also after a resume (the Trainer's covers only the steps since)."""
    recs = step_records(trainer)
    if len(recs) != trainer.state.global_step:
        raise ExoflowError(f"{trainer.run_name}: {len(recs)} step records for "
                           f"{trainer.state.global_step} steps; the resumed checkpoint predates "
                           "per-step records: delete the work folder and run again")
    return sum(float(e["step_loss"]) for e in recs) / max(len(recs), 1)


def step_seconds(trainer) -> float | None:
    """The median time of an optimizer step in this process, the first step excluded (it
    carries the warm-up); None with fewer than two steps."""
    ends = trainer.step_ends
    gaps = sorted(b - a for a, b in zip(ends, ends[1:]))
    return gaps[len(gaps) // 2] if gaps else None


def run_info(trainer) -> dict:
    """How the run was executed (processes, accumulation, engine, precision, parameters)."""
    args = trainer.args
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {
        **parameter_counts(model),
        "lora": bool(is_peft(model)),
        "world_size": int(args.world_size),
        "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
        "deepspeed_zero_stage": plugin.zero_stage if trainer.is_deepspeed_enabled else None,
        "wrapped_model": type(trainer.model_wrapped).__name__,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "device": str(args.device),
    }
