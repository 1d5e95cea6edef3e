"""Where and how a job computes: processes, threads, devices, precision, collectives.

Shared by training (:mod:`exoflow.trainer`, :mod:`exoflow.recipe`) and the inference stages
(reference cache, sampling, scoring, evaluation). torch is imported inside the functions, so
this module is cheap to import.
"""

from __future__ import annotations

import contextlib
import os
import sys

from .config import Runtime
from .errors import ParamsError

__all__ = ["default_device", "die_with_launcher", "eval_shard", "gradient_accumulation_steps",
           "inference", "on_cpu", "progress_bar", "reduce_sums", "reference_dtype", "reference_precision", "set_threads",
           "setup_threads", "single_process_env", "torch_dtype", "world_size"]


def world_size() -> int:
    """Processes of this job, as set by torchrun/deepspeed (1 when launched plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation_steps(batch_size: int, micro_batch_size: int, n_procs: int) -> int:
    """``batch_size / (micro_batch_size * n_procs)``, refusing anything but a whole number."""
    per_pass = micro_batch_size * n_procs
    if batch_size % per_pass:
        raise ParamsError(
            f"batch_size {batch_size} is not a multiple of micro_batch_size {micro_batch_size} x "
            f"{n_procs} training process(es) (engine.processes, else engine.gpus) = {per_pass}; "
            "change one of them")
    return batch_size // per_pass


def default_device(device: str | None = None) -> str:
    """``device``, else CUDA when a GPU is visible, else the CPU."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def inference(*models, amp_dtype=None):
    """``models`` in eval mode under ``torch.inference_mode`` (and, with ``amp_dtype``, the
    autocast mixed-precision training uses), each one's train/eval mode restored after."""
    import torch

    modes = [m.training for m in models]
    device = next(models[0].parameters()).device
    for m in models:
        m.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype,
                                                    enabled=amp_dtype is not None):
            yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar on stderr (the job's log)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def on_cpu(rt: Runtime) -> bool:
    import torch

    return rt.engine.gpus == 0 or not torch.cuda.is_available()


def torch_dtype(dtype: str | None):
    """The torch dtype of ``fp32`` / ``bf16`` / ``fp16`` (None for None or ``auto``)."""
    if dtype in (None, "auto"):
        return None
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def reference_precision(rt: Runtime) -> tuple[str, str | None]:
    """``(weights dtype, autocast dtype or None)`` that run the reference as training runs the
    policy, so that log π_θ − log π_ref starts at 0 rather than at the rounding difference of
    two precisions: fp32 with dtype fp32; the dtype's weights under DeepSpeed (it converts the
    model, no autocast); fp32 weights under autocast otherwise (the Trainer's amp, on the CPU
    too)."""
    if rt.dtype == "fp32":
        return "fp32", None
    if rt.engine.deepspeed:
        return rt.dtype, None
    return "fp32", rt.dtype


def reference_dtype(rt: Runtime) -> str:
    """How the reference runs under ``rt``: ``fp32``, ``bf16``/``fp16`` weights, or
    ``fp32+autocast-<dtype>`` (recorded in a reference cache as "dtype")."""
    weights, amp = reference_precision(rt)
    return weights if amp is None else f"fp32+autocast-{amp}"


def set_threads(n: int | None) -> None:
    """torch's CPU threads (None: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


def setup_threads(rt: Runtime) -> None:
    set_threads(rt.engine.num_threads)


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
