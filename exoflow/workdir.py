"""A training job's folders: the work folder it resumes from, and the model folders it saves.

Why a work folder apart from the output folder: Snakemake deletes the outputs of a failed job,
so the Trainer checkpoints a restarted job resumes from (and the alignment checkpoints made
before the resume point) must live elsewhere. The work folder remembers the parameters that
made its checkpoints (``exoflow_params.json``); made with others, it is not resumed from.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

from .io import PARAMS_FILE, atomic_folder, disk_error, read_json, write_json
from .locks import LOCK_PREFIX
from .lora import is_peft, merged_state_dict
from .modeling import check_finite_weights

__all__ = ["PARAMS_FILE", "empty_dir", "jsonable", "last_checkpoint", "remove_checkpoints",
           "run_trainer", "save_model"]

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _checkpoints(work_dir) -> list[tuple[int, Path, bool]]:
    """``(step, folder, complete)`` of every ``checkpoint-<step>`` folder in ``work_dir``. The
    Trainer writes ``trainer_state.json`` last, so a folder without it was cut short."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    return [(int(m.group(1)), p, (p / "trainer_state.json").exists())
            for p in work_dir.iterdir()
            if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()]


def last_checkpoint(work_dir) -> str | None:
    """The newest *complete* ``checkpoint-<step>`` folder in ``work_dir`` (or None)."""
    found = [(step, p) for step, p, complete in _checkpoints(work_dir) if complete]
    return str(max(found)[1]) if found else None


def checkpoint_step(path) -> int:
    """The step of a ``checkpoint-<step>`` folder."""
    return int(_CHECKPOINT_RE.match(Path(path).name).group(1))


def empty_dir(folder, keep=()) -> None:
    """Empty ``folder`` (if it exists): a training job starts from an empty output
    folder, so that nothing an earlier config wrote there (a ``ckpt3/`` of a run that now has
    two checkpoints) survives beside the new outputs. ``keep``: paths never to delete (the
    work and log folders, should they lie inside); the job's own output locks stay too."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    kept = {Path(k).resolve() for k in keep}
    for p in folder.iterdir():
        r = p.resolve()
        if r in kept or any(r in k.parents for k in kept) or p.name.startswith(LOCK_PREFIX):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def remove_checkpoints(work_dir) -> None:
    for _, p, _ in _checkpoints(work_dir):
        shutil.rmtree(p)


def _nearly_full(folder, room: int = 16 << 20) -> bool:
    """Less than ``room`` bytes free where ``folder`` is: a failed write there was the disk's."""
    try:
        return shutil.disk_usage(folder).free < room
    except OSError:
        return False


def remove_incomplete_checkpoints(work_dir) -> None:
    """Delete the ``checkpoint-<step>`` folders that lack ``trainer_state.json`` (the Trainer
    writes it last): a save cut short by a full disk or a kill."""
    for _, p, complete in _checkpoints(work_dir):
        if not complete:
            shutil.rmtree(p, ignore_errors=True)


def stamp_differs(work_dir, params: dict) -> bool:
    """Whether ``work_dir`` was made with other parameters than ``params``."""
    stamp = Path(work_dir) / PARAMS_FILE
    return stamp.exists() and read_json(stamp) != jsonable(params)


def run_trainer(trainer, work_dir, params: dict | None = None):
    """``trainer.train()``, resumed from the last complete checkpoint in ``work_dir`` if any.

    ``params`` (everything that shapes the run, JSON-able) is kept in the work folder; a
    work folder made with other params is not resumed from: its checkpoints are deleted.
    Returns the ``TrainOutput``; ``trainer.resumed_from`` says which checkpoint (or None).
    """
    work_dir = Path(work_dir)
    acc = trainer.accelerator
    if params is not None and acc.is_main_process:
        if stamp_differs(work_dir, params):
            if last_checkpoint(work_dir):
                print(f"[exoflow] {work_dir}: checkpoints were made with other parameters; "
                      "starting over", flush=True)
            remove_checkpoints(work_dir)
        write_json(work_dir / PARAMS_FILE, jsonable(params))
    acc.wait_for_everyone()
    ckpt = last_checkpoint(work_dir)
    if ckpt and acc.is_main_process:
        print(f"[exoflow] resuming from {ckpt}", flush=True)
    from .trainer import tensorboard_dir, trim_tensorboard

    log_dir = tensorboard_dir(trainer)
    if acc.is_main_process:
        if log_dir:  # the killed run's steps after the checkpoint (all: starting over) go
            trim_tensorboard(log_dir, checkpoint_step(ckpt) if ckpt else 0)
    acc.wait_for_everyone()
    trainer.resumed_from = ckpt
    try:
        out = trainer.train(resume_from_checkpoint=ckpt)
    except Exception as e:
        full = disk_error(e, work_dir)
        if full is None and _nearly_full(work_dir):  # torch's zip writer says only
            full = OSError(errno.ENOSPC, "No space left on device", str(work_dir))  # "pos"
        if acc.is_main_process:  # a save cut short keeps no half checkpoint
            remove_incomplete_checkpoints(work_dir)
        if full is not None:
            raise full from None
        raise
    if acc.is_main_process and log_dir:  # one clean stream: the restart's steps once each
        trim_tensorboard(log_dir)
    return out


def save_model(trainer, tokenizer, out_dir, params: dict) -> None:
    """Model (safetensors) + tokenizer + ``exoflow_params.json`` into ``out_dir``; a LoRA model
    is saved merged, as the plain model (:func:`exoflow.lora.merged_state_dict`).

    Collective under DeepSpeed (every process must call it); only the main process writes.
    """
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
                             f"{trainer.run_name} (not saved to {out_dir})")
        plain = model.get_base_model() if lora else model
        use_cache = plain.config.use_cache
        plain.config.use_cache = True  # the Trainer turned it off for training; keep it for generation
        with atomic_folder(out_dir) as tmp:
            plain.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            write_json(tmp / PARAMS_FILE, jsonable(params))
        plain.config.use_cache = use_cache
    acc.wait_for_everyone()
