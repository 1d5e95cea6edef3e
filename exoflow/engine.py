"""The training engine every stage shares (SFT, RM, alignment): Hugging Face ``Trainer`` setup.

What a stage gets from here:

* ``EngineParams`` (config ``engine`` + ``dtype`` + ``seed``) and ``StageParams`` (the optimiser
  and batch fields of a stage section), both with ``from_dict`` refusing unknown keys;
* ``make_training_args``: batch semantics (``batch_size`` per optimizer step across all
  processes, ``micro_batch_size`` per process per forward, the rest gradient accumulation),
  precision (``dtype``: bf16 autocast on the CPU or a GPU, fp16 with loss scaling on a GPU only), DeepSpeed when
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
import sys
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ExoflowError, NonFiniteError, ParamsError  # noqa: F401 (re-exported)
from .io import read_json, write_json
from .modeling import check_finite_weights

PARAMS_FILE = "exoflow_params.json"  # the resolved parameters, next to a model or in a work dir
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_DTYPES = ("fp32", "bf16", "fp16")


class FromDict:
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


@dataclass
class EngineParams(FromDict):
    """How a training job runs: config ``engine`` plus ``model.dtype`` and ``seed``. Every key
    is described in ``schemas/config.schema.yaml`` (tests/test_schema.py keeps them equal)."""

    deepspeed: str | None = None
    gpus: int = 0
    processes: int | None = None
    gradient_checkpointing: bool = False
    num_threads: int | None = None
    logging_steps: int = 10
    checkpoint_every: int = 200
    dtype: str = "fp32"
    seed: int = 42
    lora: dict | None = None  # config model.lora (exoflow.lora.LoraParams); None: full training

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise ParamsError(f"engine dtype {self.dtype!r}: use one of {list(_DTYPES)}")
        for name in ("logging_steps", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ParamsError(f"engine.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus < 0:
            raise ParamsError(f"engine.gpus must be >= 0, got {self.gpus}")
        if self.processes is not None and self.processes < 1:
            raise ParamsError(f"engine.processes must be null or >= 1, got {self.processes}")
        if self.gpus > 0 and self.processes not in (None, self.gpus):
            raise ParamsError(f"engine.processes {self.processes} with engine.gpus {self.gpus}: on "
                              "GPUs a job runs one process per GPU; set processes to null or "
                              f"{self.gpus}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ParamsError(f"engine.num_threads must be null or >= 1, got {self.num_threads}")
        if self.lora is not None:
            from .lora import LoraParams

            LoraParams.from_dict(self.lora)
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


def check_optimizer(params, section: str) -> None:
    """The AdamW keys every training section shares (sft, rm, align): betas in [0, 1),
    weight decay and clipping norm >= 0."""
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(params, name) < 1:
            raise ParamsError(f"{section}.{name} must be in [0, 1), got {getattr(params, name)}")
    for name in ("weight_decay", "max_grad_norm"):
        if not getattr(params, name) >= 0:
            raise ParamsError(f"{section}.{name} must be >= 0, got {getattr(params, name)}")


@dataclass
class StageParams(FromDict):
    """Optimisation and sequence lengths of one training stage (config ``sft`` or ``rm``), each
    key described in ``schemas/config.schema.yaml`` (definitions.train_stage)."""

    lr: float
    epochs: float
    batch_size: int
    micro_batch_size: int
    warmup_ratio: float = 0.0
    max_len: int = 512
    max_gen_len: int = 200
    max_steps: int | None = None
    # The paper's optimiser (exact-optimization src/*_stage/train.py): AdamW, betas (0.9, 0.95),
    # no weight decay, cosine schedule, gradient clipping 1.0 (its DeepSpeed config).
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    group_by_length: bool = True

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
        check_optimizer(self, name)


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


def reference_precision(engine: EngineParams) -> tuple[str, str | None]:
    """``(weights dtype, autocast dtype or None)`` that run the reference as training runs the
    policy, so that log π_θ − log π_ref starts at 0 rather than at the rounding difference of
    two precisions: fp32 with dtype fp32; the dtype's weights under DeepSpeed (it converts the
    model, no autocast); fp32 weights under autocast otherwise (the Trainer's amp, on the CPU
    too)."""
    if engine.dtype == "fp32":
        return "fp32", None
    if engine.deepspeed:
        return engine.dtype, None
    return "fp32", engine.dtype


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


def prepare_model(model, engine: EngineParams, task: str):
    """The model a stage trains: ``model`` itself, or with ``engine.lora`` wrapped in LoRA
    adapters (``task``: ``"CAUSAL_LM"`` or ``"SEQ_CLS"``; :mod:`exoflow.lora`)."""
    if not engine.lora:
        return model
    from .lora import apply_lora

    model = apply_lora(model, engine.lora, task)
    if engine.gradient_checkpointing:
        model.enable_input_require_grads()  # the frozen embeddings' output must carry grad
    return model


def die_with_launcher() -> None:
    """Under torchrun, make this worker die when its launcher does (Linux ``PR_SET_PDEATHSIG``).

    torchrun starts each worker in a session of its own, so a SIGKILL of the launcher (the OOM
    killer, ``kill -9`` of the job's process) would leave the workers training on, writing into
    the work folder that the rerun resumes from. A no-op outside torchrun and off Linux."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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

    die_with_launcher()
    if engine.deepspeed:
        single_process_env()
    n_procs = world_size() if n_procs is None else n_procs
    cpu = on_cpu(engine)
    if cpu and engine.dtype == "fp16":
        raise ParamsError("model.dtype fp16 needs a GPU (its loss scaling is CUDA's); on the CPU "
                          "use bf16 or fp32")
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
        bf16=engine.dtype == "bf16",  # autocast (CPU or GPU), fp32 master weights
        fp16=engine.dtype == "fp16",
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
        # A NaN loss must stop the run (ExoTrainer), never be logged as the previous average.
        logging_nan_inf_filter=False,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


@functools.cache
def trainer_class():
    """``transformers.Trainer`` with resuming fixed; subclass this one in every stage."""
    from transformers import Trainer

    class ExoTrainer(Trainer):
        """``group_lengths``: one length per training example; when given, batches are drawn by
        :func:`length_grouped_sampler` (examples of similar length together, seeded order).

        Every optimizer step's loss (and the metrics a subclass adds with :meth:`add_step_metric`),
        averaged over processes, is kept in ``state.log_history`` as ``{"step", "step_loss",
        ...}``: it is saved with each Trainer checkpoint and restored on resume, so
        :func:`step_records` covers every step of a resumed run exactly as of an uninterrupted one.

        A micro-batch loss or a gradient norm that is not finite stops the run with a
        :class:`~exoflow.errors.NonFiniteError` naming the step and ``run_name`` before the
        optimizer applies it (with fp16 loss scaling an infinite gradient norm is the scaler's
        business: that step is skipped, not refused).
        """

        def __init__(self, *args, group_lengths=None, run_name: str = "training", **kwargs):
            super().__init__(*args, **kwargs)
            self.group_lengths = group_lengths
            self.run_name = run_name
            self._step_sums: dict = {}
            self.add_callback(_StepRecorder(self))

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
            import torch

            loss = super().training_step(model, inputs, num_items_in_batch)
            if not bool(torch.isfinite(loss).all()):
                self._non_finite("the training loss", float(loss))
            self.add_step_metric("step_loss", loss)
            return loss

        def _get_grad_norm(self, model, grad_norm=None):
            import math

            norm = super()._get_grad_norm(model, grad_norm=grad_norm)
            if norm is not None and not self.args.fp16:
                value = float(norm)
                if not math.isfinite(value):
                    self._non_finite("the gradient norm", value)
            return norm

        def _get_train_sampler(self, train_dataset=None):
            if self.group_lengths is None or (train_dataset is not None
                                              and train_dataset is not self.train_dataset):
                return super()._get_train_sampler(train_dataset)
            # One optimizer step's examples across all processes (accelerate deals the sampler's
            # micro-batches out in turn), so n processes see the order one process does.
            return length_grouped_sampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps
                * self.args.world_size, self.group_lengths, seed=self.args.seed)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers 5.x saves some models with their hub key names (GPT-NeoX: lm_head ->
            # embed_out) but resumes with a non-strict load_state_dict that skips the renaming,
            # so lm_head silently kept its initial weights (huggingface/transformers#43701).
            # DeepSpeed resumes from its own module states and is not affected.
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            from .lora import is_peft

            target = model if model is not None else self.model
            if not is_peft(target):  # a LoRA checkpoint holds the adapters, which peft loads
                reload_weights(target, resume_from_checkpoint)

    return ExoTrainer


def _StepRecorder(trainer):
    """The callback behind ``ExoTrainer``'s per-step records (see its docstring)."""
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            import torch

            sums, trainer._step_sums = trainer._step_sums, {}
            if not sums:
                return
            names = sorted(sums)
            t = torch.stack([sums[k].to(args.device) for k in names])
            if args.world_size > 1:
                t = trainer.accelerator.reduce(t, reduction="mean")
            rec = {k: float(v) for k, v in zip(names, t.tolist())}
            state.log_history.append({"step": int(state.global_step), **rec})

    return StepRecorder()


def step_records(trainer) -> list[dict]:
    """One ``{"step", "step_loss", ...}`` per optimizer step, in step order (a resumed run's
    records before its checkpoint come from the checkpoint's saved state)."""
    recs = {}
    for e in trainer.state.log_history:
        if "step_loss" in e and "step" in e:
            recs[int(e["step"])] = e  # a step redone after a resume replaces its record
    return [recs[s] for s in sorted(recs)]


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


def empty_dir(folder, keep=()) -> None:
    """Empty ``folder`` (if it exists): a training job starts from an empty output
    folder, so that nothing an earlier config wrote there (a ``ckpt3/`` of a run that now has
    two checkpoints) survives beside the new outputs. ``keep``: paths never to delete (the
    work and log folders, should they lie inside)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    kept = {Path(k).resolve() for k in keep}
    for p in folder.iterdir():
        r = p.resolve()
        if r in kept or any(r in k.parents for k in kept):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def remove_checkpoints(work_dir) -> None:
    work_dir = Path(work_dir)
    if work_dir.is_dir():
        for p in work_dir.iterdir():
            if _CHECKPOINT_RE.match(p.name) and p.is_dir():
                shutil.rmtree(p)


def jsonable(obj):
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
        params = jsonable(params)
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
    from .lora import is_peft, parameter_counts

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


def loss_curve(trainer) -> list[dict]:
    """``[{step, loss}]``: every optimizer step's loss (mean over its micro-batches and
    processes), the same after a resume as without one."""
    return [{"step": int(e["step"]), "loss": float(e["step_loss"])} for e in step_records(trainer)]


def mean_train_loss(trainer) -> float:
    """The mean of every step's loss: the Trainer's ``training_loss`` of an uninterrupted run,
    over the whole run also after a resume (the Trainer's covers only the steps since)."""
    recs = step_records(trainer)
    if len(recs) != trainer.state.global_step:
        raise ExoflowError(f"{trainer.run_name}: {len(recs)} step records for "
                           f"{trainer.state.global_step} steps; the resumed checkpoint predates "
                           "per-step records: delete the work folder and run again")
    return sum(float(e["step_loss"]) for e in recs) / max(len(recs), 1)


# ---------------------------------------------------------------------------------------------
# the end of a run


def save_final(trainer, tokenizer, out_dir, params: dict) -> None:
    """Model (safetensors) + tokenizer + ``exoflow_params.json`` into ``out_dir``; a LoRA model
    is saved merged, as the plain model (:func:`exoflow.lora.merged_state_dict`).

    Collective under DeepSpeed (every process must call it); only the main process writes.
    """
    from .lora import is_peft, merged_state_dict

    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    lora = is_peft(model)
    state_dict = None
    if lora:  # ZeRO <= 2 keeps every parameter whole on every process
        state_dict = merged_state_dict(model) if acc.is_main_process else None
    elif trainer.is_deepspeed_enabled:
        state_dict = acc.get_state_dict(trainer.model_wrapped)
    if acc.is_main_process:
        out_dir = Path(out_dir)
        check_finite_weights(model.state_dict() if state_dict is None else state_dict,
                             f"{getattr(trainer, 'run_name', 'training')} (not saved to {out_dir})")
        out_dir.mkdir(parents=True, exist_ok=True)
        plain = model.get_base_model() if lora else model
        plain.config.use_cache = True  # the Trainer turned it off for training; keep it for generation
        plain.save_pretrained(str(out_dir), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))
        write_json(out_dir / PARAMS_FILE, jsonable(params))
    acc.wait_for_everyone()


def train_metrics(trainer, out, num_train: int) -> dict:
    """The metrics every stage reports about its training run (``out``: ``run_trainer``'s)."""
    return {
        "train_loss_curve": loss_curve(trainer),
        "train_loss": mean_train_loss(trainer),
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
