"""The training engine every stage shares (SFT, RM, alignment): Hugging Face ``Trainer`` setup.

What a stage gets from here:

* ``EngineParams`` (config ``engine`` + ``dtype`` + ``seed``) and ``StageParams`` (the optimiser
  and batch fields of a stage section), both with ``from_dict`` refusing unknown keys;
* ``make_training_args``: batch semantics (``batch_size`` per optimizer step across all
  processes, ``micro_batch_size`` per process per forward, the rest gradient accumulation),
  precision (bf16/fp16 on GPU per ``dtype``, fp32 on CPU always), DeepSpeed when
  ``engine.deepspeed`` names a ZeRO config, checkpoints every ``checkpoint_every`` steps into a
  *work* folder, TensorBoard logs;
* ``run_trainer``: resumes from the last complete checkpoint of the work folder, unless that
  folder was made with other parameters (then it starts over);
* ``save_final``: ``save_pretrained`` (safetensors) model + tokenizer + ``exoflow_params.json``.

Why a work folder apart from the output folder: Snakemake deletes the outputs of a failed job,
so the checkpoints a restarted job resumes from must live elsewhere.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .io import read_json, write_json

PARAMS_FILE = "exoflow_params.json"  # the resolved parameters, next to a model or in a work dir
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_DTYPES = ("fp32", "bf16", "fp16")


class ParamsError(ValueError):
    """A parameter section is malformed; the message says which key and what to set."""


class _FromDict:
    """``from_dict`` for config dataclasses: unknown keys are refused, missing ones named."""

    @classmethod
    def from_dict(cls, d: dict | None):
        d = dict(d or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ParamsError(
                f"{cls.__name__}: unknown key(s) {unknown}; the known keys are {known}"
            )
        missing = [f.name for f in fields(cls)
                   if f.name not in d and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ParamsError(f"{cls.__name__}: missing key(s) {missing}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def _doc(text: str, default=MISSING):
    if default is MISSING:
        return field(metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class EngineParams(_FromDict):
    """How a training job runs: config ``engine`` plus the run's ``dtype`` and ``seed``."""

    deepspeed: str | None = _doc(
        "Path of a DeepSpeed ZeRO config (stage 1 or 2; 'auto' values are filled by the "
        "Trainer), or null for plain PyTorch (DDP when launched on several processes).", None)
    gpus: int = _doc(
        "GPUs per job. 0 trains on the CPU (fp32) even if a GPU is visible; the number of "
        "processes is whatever launched the job (WORLD_SIZE), the workflow rule picks the "
        "launcher from this.", 0)
    gradient_checkpointing: bool = _doc(
        "Recompute activations in the backward pass (less memory, ~20% slower).", False)
    num_threads: int | None = _doc(
        "torch.set_num_threads for this job; null leaves torch's default (all cores).", None)
    logging_steps: int = _doc("Optimizer steps between logged train losses.", 10)
    checkpoint_every: int = _doc(
        "Optimizer steps between Trainer checkpoints in the work folder (for resuming).", 200)
    dtype: str = _doc("bf16 | fp16 | fp32: mixed precision on GPU; always fp32 on the CPU.", "fp32")
    seed: int = _doc("Seeds model head init, data order and dropout.", 42)

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise ParamsError(f"engine dtype {self.dtype!r}: use one of {list(_DTYPES)}")
        for name in ("logging_steps", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ParamsError(f"engine.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus < 0:
            raise ParamsError(f"engine.gpus must be >= 0, got {self.gpus}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ParamsError(f"engine.num_threads must be null or >= 1, got {self.num_threads}")
        if self.deepspeed is not None:
            stage = zero_stage(self.deepspeed)
            if stage not in (0, 1, 2):
                raise ParamsError(
                    f"{self.deepspeed}: ZeRO stage {stage} is not supported (the final save and "
                    "the test-set evaluation need full parameters on every process); use "
                    "configs/deepspeed/zero2.json"
                )


def zero_stage(ds_config: str) -> int:
    path = Path(ds_config)
    if not path.exists():
        raise ParamsError(f"engine.deepspeed: no such file {ds_config!r}")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ParamsError(f"engine.deepspeed: {ds_config} is not valid JSON ({e})") from None
    return int(cfg.get("zero_optimization", {}).get("stage", 0))


@dataclass
class StageParams(_FromDict):
    """Optimisation and sequence lengths of one training stage (config ``sft`` or ``rm``)."""

    lr: float = _doc("Peak learning rate (AdamW).")
    epochs: float = _doc("Passes over the training set (ignored when max_steps is set).")
    batch_size: int = _doc("Examples per optimizer step, across all processes and accumulation.")
    micro_batch_size: int = _doc("Examples per process per forward pass.")
    warmup_ratio: float = _doc("Fraction of the steps with a linear warmup from 0.", 0.0)
    max_len: int = _doc("Prompt + response tokens; the prompt is left-truncated to fit.", 512)
    max_gen_len: int = _doc("Response tokens kept (right-truncated).", 200)
    max_steps: int | None = _doc("Stop after this many optimizer steps (null: run the epochs).", None)
    # The paper's optimiser (exact-optimization src/*_stage/train.py): AdamW, betas (0.9, 0.95),
    # no weight decay, cosine schedule, gradient clipping 1.0 (its DeepSpeed config).
    adam_beta1: float = _doc("AdamW beta1.", 0.9)
    adam_beta2: float = _doc("AdamW beta2.", 0.95)
    weight_decay: float = _doc("AdamW weight decay.", 0.0)
    lr_scheduler: str = _doc("transformers scheduler name (cosine, linear, constant, ...).", "cosine")
    max_grad_norm: float = _doc("Gradient clipping norm.", 1.0)
    group_by_length: bool = _doc(
        "Batches of examples of similar length (engine.length_grouped_sampler, seeded), which "
        "pads less than uniformly random batches (false).", True)

    def __post_init__(self):
        name = type(self).__name__
        if self.lr <= 0:
            raise ParamsError(f"{name}.lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ParamsError(f"{name}: batch_size and micro_batch_size must be >= 1")
        if self.batch_size % self.micro_batch_size:
            raise ParamsError(
                f"{name}: batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}; set batch_size = micro_batch_size x GPUs x accumulation"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ParamsError(f"{name}.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 < self.max_gen_len < self.max_len:
            raise ParamsError(
                f"{name}: need 0 < max_gen_len < max_len (got {self.max_gen_len}, {self.max_len}) "
                "so that some prompt fits"
            )
        if self.max_steps is None and self.epochs <= 0:
            raise ParamsError(f"{name}.epochs must be > 0 (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ParamsError(f"{name}.max_steps must be null or >= 1, got {self.max_steps}")


# ---------------------------------------------------------------------------------------------
# processes, batches, precision


def world_size() -> int:
    """Processes of this job, as set by torchrun/deepspeed (1 when launched plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation_steps(batch_size: int, micro_batch_size: int, n_procs: int) -> int:
    """``batch_size / (micro_batch_size * n_procs)``, refusing anything but a whole number."""
    per_pass = micro_batch_size * n_procs
    if batch_size % per_pass:
        raise ParamsError(
            f"batch_size {batch_size} is not divisible by micro_batch_size {micro_batch_size} x "
            f"{n_procs} process(es) = {per_pass}; change batch_size, micro_batch_size or the "
            "number of GPUs so that it is"
        )
    return batch_size // per_pass


def on_cpu(engine: EngineParams) -> bool:
    import torch

    return engine.gpus == 0 or not torch.cuda.is_available()


def setup_threads(engine: EngineParams) -> None:
    if engine.num_threads:
        import torch

        torch.set_num_threads(engine.num_threads)


def single_process_env() -> None:
    """Give a plainly launched process (``python script.py``) the environment of a one-process
    group: DeepSpeed needs a process group even for one GPU, and only launchers (torchrun,
    deepspeed) set these. A no-op under a launcher."""
    if "RANK" in os.environ or "LOCAL_RANK" in os.environ:
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1")


def make_training_args(params, engine: EngineParams, work_dir, log_dir=None, n_procs: int | None = None,
                       **overrides):
    """``TrainingArguments`` for a stage.

    ``params`` is any object with ``lr``, ``batch_size``, ``micro_batch_size`` and optionally
    ``epochs``, ``max_steps``, ``warmup_ratio``/``warmup_steps``, ``adam_beta1``, ``adam_beta2``,
    ``weight_decay``, ``lr_scheduler``, ``max_grad_norm`` (so the alignment stage can reuse it).
    ``log_dir`` is where TensorBoard writes (see :func:`attach_tensorboard`); ``overrides`` go
    to ``TrainingArguments`` last (e.g. ``save_steps``, ``save_total_limit``).
    """
    from transformers import TrainingArguments

    if engine.deepspeed:
        single_process_env()
    n_procs = world_size() if n_procs is None else n_procs
    cpu = on_cpu(engine)
    g = lambda name, default=None: getattr(params, name, default)  # noqa: E731
    warmup = g("warmup_steps") or g("warmup_ratio", 0.0) or 0
    max_steps = g("max_steps")
    kwargs: dict[str, Any] = dict(
        output_dir=str(work_dir),
        per_device_train_batch_size=params.micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps(
            params.batch_size, params.micro_batch_size, n_procs),
        learning_rate=params.lr,
        num_train_epochs=float(g("epochs", 1) or 1),
        max_steps=-1 if max_steps is None else int(max_steps),
        warmup_steps=warmup,
        lr_scheduler_type=g("lr_scheduler", "cosine"),
        adam_beta1=g("adam_beta1", 0.9),
        adam_beta2=g("adam_beta2", 0.95),
        weight_decay=g("weight_decay", 0.0),
        max_grad_norm=g("max_grad_norm", 1.0),
        bf16=not cpu and engine.dtype == "bf16",
        fp16=not cpu and engine.dtype == "fp16",
        use_cpu=cpu,
        deepspeed=engine.deepspeed,
        activation_checkpointing=engine.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if engine.gradient_checkpointing else None,
        seed=engine.seed,
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
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


@functools.cache
def trainer_class():
    """``transformers.Trainer`` with resuming fixed; subclass this one in every stage."""
    from transformers import Trainer

    class ExoTrainer(Trainer):
        """``group_lengths``: one length per training example; when given, batches are drawn by
        :func:`length_grouped_sampler` (examples of similar length together, seeded order)."""

        def __init__(self, *args, group_lengths=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.group_lengths = group_lengths

        def _get_train_sampler(self, train_dataset=None):
            if self.group_lengths is None or (train_dataset is not None
                                              and train_dataset is not self.train_dataset):
                return super()._get_train_sampler(train_dataset)
            return length_grouped_sampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                self.group_lengths, seed=self.args.seed)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers 5.x saves some models with their hub key names (GPT-NeoX: lm_head ->
            # embed_out) but resumes with a non-strict load_state_dict that skips the renaming,
            # so lm_head silently kept its initial weights (huggingface/transformers#43701).
            # DeepSpeed resumes from its own module states and is not affected.
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            reload_weights(model if model is not None else self.model, resume_from_checkpoint)

    return ExoTrainer


def length_grouped_sampler(batch_size: int, lengths: list[int], seed: int):
    """transformers' ``LengthGroupedSampler`` (megabatches of 50 batches, each sorted by length,
    in random order) whose order depends only on (seed, epoch), so a resumed run skips exactly
    the batches it already trained on."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class Sampler(LengthGroupedSampler):
        def __init__(self):
            super().__init__(batch_size, lengths=list(lengths))
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch):
            self.epoch = int(epoch)

        def __iter__(self):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))

    return Sampler()


def reload_weights(model, folder) -> None:
    """Load a ``save_pretrained`` folder into ``model`` in place, through ``from_pretrained``'s
    key conversions, refusing any missing or unexpected key."""
    import torch

    dtype = next(model.parameters()).dtype
    fresh = type(model).from_pretrained(str(folder), dtype=dtype)
    with torch.no_grad():
        model.load_state_dict(fresh.state_dict(), strict=True)
    del fresh


def attach_tensorboard(trainer, log_dir) -> None:
    """Point the Trainer's TensorBoard callback at ``log_dir`` (not ``<output_dir>/runs``)."""
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = str(log_dir)


# ---------------------------------------------------------------------------------------------
# checkpoints and resuming


def last_checkpoint(work_dir) -> str | None:
    """The newest *complete* ``checkpoint-<step>`` folder in ``work_dir`` (or None).

    The Trainer writes ``trainer_state.json`` last, so a folder without it was cut short.
    """
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return None
    found = []
    for p in work_dir.iterdir():
        m = _CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").exists():
            found.append((int(m.group(1)), p))
    return str(max(found)[1]) if found else None


def remove_checkpoints(work_dir) -> None:
    work_dir = Path(work_dir)
    if work_dir.is_dir():
        for p in work_dir.iterdir():
            if _CHECKPOINT_RE.match(p.name) and p.is_dir():
                shutil.rmtree(p)


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def run_trainer(trainer, work_dir, params: dict | None = None):
    """``trainer.train()``, resumed from the last complete checkpoint in ``work_dir`` if any.

    ``params`` (everything that shapes the run, JSON-able) is kept in the work folder; a
    work folder made with other params is not resumed from: its checkpoints are deleted.
    Returns the ``TrainOutput``; ``trainer.resumed_from`` says which checkpoint (or None).
    """
    work_dir = Path(work_dir)
    stamp = work_dir / PARAMS_FILE
    acc = trainer.accelerator
    if params is not None and acc.is_main_process:
        params = _jsonable(params)
        if stamp.exists() and read_json(stamp) != params:
            if last_checkpoint(work_dir):
                print(f"[exoflow] {work_dir}: checkpoints were made with other parameters; "
                      "starting over", flush=True)
            remove_checkpoints(work_dir)
        write_json(stamp, params)
    acc.wait_for_everyone()
    ckpt = last_checkpoint(work_dir)
    if ckpt and acc.is_main_process:
        print(f"[exoflow] resuming from {ckpt}", flush=True)
    trainer.resumed_from = ckpt
    return trainer.train(resume_from_checkpoint=ckpt)


def run_info(trainer) -> dict:
    """How the run was executed, for metrics.json (processes, accumulation, engine, precision)."""
    args = trainer.args
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return {
        "world_size": int(args.world_size),
        "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
        "deepspeed_zero_stage": plugin.zero_stage if trainer.is_deepspeed_enabled else None,
        "wrapped_model": type(trainer.model_wrapped).__name__,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "device": str(args.device),
    }


def loss_curve(trainer, key: str = "loss") -> list[dict]:
    """``[{step, loss}]`` from the Trainer's log history (restored on resume, so complete)."""
    return [{"step": int(e["step"]), "loss": float(e[key])}
            for e in trainer.state.log_history if key in e and "step" in e]


# ---------------------------------------------------------------------------------------------
# the end of a run


def save_final(trainer, tokenizer, out_dir, params: dict) -> None:
    """Model (safetensors) + tokenizer + ``exoflow_params.json`` into ``out_dir``.

    Collective under DeepSpeed (every process must call it); only the main process writes.
    """
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    state_dict = acc.get_state_dict(trainer.model_wrapped) if trainer.is_deepspeed_enabled else None
    if acc.is_main_process:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.config.use_cache = True  # the Trainer turned it off for training; keep it for generation
        model.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))
        write_json(out_dir / PARAMS_FILE, _jsonable(params))
    acc.wait_for_everyone()


def train_metrics(trainer, out, num_train: int) -> dict:
    """The metrics every stage reports about its training run (``out``: ``run_trainer``'s)."""
    return {
        "train_loss_curve": loss_curve(trainer),
        "train_loss": float(out.training_loss),
        "global_step": int(trainer.state.global_step),
        "resumed_from": trainer.resumed_from,
        "run": run_info(trainer),
        "num_train": num_train,
    }


def finish(trainer, tokenizer, out_dir, work_dir, params: dict, metrics: dict) -> None:
    """Save the final model, write ``metrics.json`` and drop the resume checkpoints."""
    save_final(trainer, tokenizer, out_dir, params)
    if trainer.is_world_process_zero():
        write_json(Path(out_dir) / "metrics.json", metrics)
        remove_checkpoints(work_dir)


def eval_shard(trainer, n: int) -> list[int]:
    """This process's share of ``range(n)`` for a distributed evaluation."""
    return list(range(trainer.args.process_index, n, trainer.args.world_size))


def reduce_sums(trainer, values: list[float]) -> list[float]:
    """Sum ``values`` over processes (identity for one process)."""
    if trainer.args.world_size <= 1:
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=trainer.args.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def eval_model(trainer):
    """The trained module for a no-grad evaluation pass (eval mode, on the training device)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    return model
