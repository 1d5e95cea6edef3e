"""GPU placement on a workstation: give each job its own devices, with file locks.

Snakemake does not set ``CUDA_VISIBLE_DEVICES``, so on a box with several GPUs every job would
land on GPU 0. This module is a command wrapper that takes ``n`` free devices from a pool of
lock files, sets ``CUDA_VISIBLE_DEVICES`` to them and runs the command::

    python -m exoflow.gpus run --n 2 -- torchrun --standalone --nproc_per_node 2 train.py ...

* The pool is one lock file per device, ``<lockdir>/gpu<id>.lock``, held with ``fcntl.flock``.
  ``lockdir`` is ``$EXOFLOW_GPU_LOCKDIR`` or ``~/.cache/exoflow/gpu_locks/<hostname>`` (point
  several users at one world-writable local folder to share a box between them).
* The device ids are ``$EXOFLOW_GPUS`` (a comma list, e.g. ``0,1,2,3`` or fake ids for tests),
  else one per line of ``nvidia-smi -L``, else one per ``/proc/driver/nvidia/gpus/*``.
* The wrapper takes all ``n`` devices or none (it never holds some while waiting for the rest,
  so two jobs cannot deadlock), polling until enough are free.
* It then *replaces itself* with the command (``exec``): the locked file descriptors stay open
  in the command's process, so the devices are released exactly when the command exits,
  crashes or is killed (the kernel drops a flock when its last descriptor closes).
* With ``n == 0``, or when ``CUDA_VISIBLE_DEVICES`` is already set (SLURM sets it for a job
  with ``--gpus``), the command runs unchanged. To share out a subset of a machine's GPUs (or
  an interactive SLURM allocation's) instead, name the pool and unset the variable:
  ``env -u CUDA_VISIBLE_DEVICES EXOFLOW_GPUS=$CUDA_VISIBLE_DEVICES snakemake ...``.
* Leading ``NAME=value`` words are environment assignments, as with ``env``, so a rule's shell
  ``{gpu_prefix}OMP_NUM_THREADS=8 python ...`` works.

Snakemake side: the local profile (``profiles/local``) limits the ``gpu`` resource to the
number of GPUs, so no more GPU jobs start than there are devices; this wrapper decides *which*.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ENV_GPUS = "EXOFLOW_GPUS"
ENV_LOCKDIR = "EXOFLOW_GPU_LOCKDIR"
VISIBLE = "CUDA_VISIBLE_DEVICES"
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def default_lockdir() -> Path:
    """``$EXOFLOW_GPU_LOCKDIR``, else ``~/.cache/exoflow/gpu_locks/<host>`` (per host, since a
    home folder may be shared between machines)."""
    if os.environ.get(ENV_LOCKDIR):
        return Path(os.environ[ENV_LOCKDIR])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "exoflow" / "gpu_locks" / socket.gethostname()


def device_ids() -> list[str]:
    """The GPUs of this machine: ``$EXOFLOW_GPUS``, else ``nvidia-smi -L``, else the driver's
    ``/proc`` entries; ``[]`` when none is found."""
    env = os.environ.get(ENV_GPUS)
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
            if out.returncode == 0 and n:
                return [str(i) for i in range(n)]
        except (OSError, subprocess.SubprocessError):
            pass
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    return []


def cpus_per_gpu() -> int:
    """This process's CPUs divided by the GPUs found (all CPUs when there is no GPU): the
    threads the local profile gives each GPU job, so that one job per GPU fits side by side."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, len(device_ids())))


def _lock_path(lockdir: Path, dev: str) -> Path:
    return lockdir / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', dev)}.lock"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def try_acquire(n: int, devices: list[str], lockdir: Path) -> dict[str, int] | None:
    """``n`` devices locked now (id -> descriptor), or None (holding nothing) if fewer are free."""
    lockdir.mkdir(parents=True, exist_ok=True)
    held: dict[str, int] = {}
    for dev in devices:
        fd = _try_lock(_lock_path(lockdir, dev))
        if fd is not None:
            held[dev] = fd
            if len(held) == n:
                return held
    release(held)
    return None


def release(held: dict[str, int]) -> None:
    for fd in held.values():
        os.close(fd)
    held.clear()


def acquire(n: int, devices: list[str] | None = None, lockdir: Path | None = None,
            poll: float = 1.0, timeout: float | None = None, log=sys.stderr) -> dict[str, int]:
    """Wait until ``n`` of ``devices`` are free and lock them (id -> open descriptor)."""
    devices = device_ids() if devices is None else devices
    lockdir = default_lockdir() if lockdir is None else lockdir
    if n > len(devices):
        raise ValueError(f"{n} GPU(s) requested but this machine has {len(devices)}: "
                         f"{','.join(devices) or 'none found'} (set ${ENV_GPUS} to override)")
    start, said = time.monotonic(), False
    while True:
        held = try_acquire(n, devices, lockdir)
        if held is not None:
            return held
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no {n} free GPU(s) of {','.join(devices)} in {timeout}s")
        if not said and log is not None:
            print(f"[exoflow.gpus] waiting for {n} free GPU(s) of {','.join(devices)} "
                  f"(locks in {lockdir})", file=log, flush=True)
            said = True
        time.sleep(poll * (0.5 + random.random()))


def split_env(cmd: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading ``NAME=value`` words of ``cmd`` (as ``env`` takes them) and the rest."""
    env: dict[str, str] = {}
    i = 0
    while i < len(cmd) and _ASSIGN.match(cmd[i]):
        name, value = cmd[i].split("=", 1)
        env[name] = value
        i += 1
    return env, cmd[i:]


def run(n: int, cmd: list[str], lockdir: Path | None = None, poll: float = 1.0,
        timeout: float | None = None) -> None:
    """Lock ``n`` GPUs, set ``CUDA_VISIBLE_DEVICES`` and ``exec`` ``cmd`` (never returns)."""
    extra, cmd = split_env(cmd)
    if not cmd:
        raise SystemExit("exoflow.gpus run: no command given (after --)")
    env = dict(os.environ, **extra)
    if n > 0 and VISIBLE not in env:
        held = acquire(n, lockdir=lockdir, poll=poll, timeout=timeout)
        for fd in held.values():
            os.set_inheritable(fd, True)  # kept open across exec: the command holds the locks
        env[VISIBLE] = ",".join(held)
        print(f"[exoflow.gpus] {VISIBLE}={env[VISIBLE]}: {shlex.join(cmd)}",
              file=sys.stderr, flush=True)
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        raise SystemExit(f"exoflow.gpus run: cannot run {cmd[0]!r}: {e.strerror}") from None


def prefix(n: int, python: str = "python") -> str:
    """The shell prefix that runs a rule's command on ``n`` GPUs of its own ('' when n is 0);
    ``python``: the shell word that runs Python (the workflow passes its interpreter)."""
    return f"{python} -m exoflow.gpus run --n {int(n)} -- " if int(n or 0) > 0 else ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m exoflow.gpus", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a command on n free GPUs of its own")
    r.add_argument("--n", type=int, required=True, help="GPUs to take (0: run unchanged)")
    r.add_argument("--lockdir", type=Path, default=None,
                   help=f"lock folder (default ${ENV_LOCKDIR} or ~/.cache/exoflow/gpu_locks/HOST)")
    r.add_argument("--poll", type=float, default=1.0, help="seconds between tries when busy")
    r.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    s = sub.add_parser("status", help="list the devices and which are in use")
    s.add_argument("--lockdir", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.cmd == "status":
        lockdir = args.lockdir or default_lockdir()
        devices = device_ids()
        print(f"lockdir: {lockdir}")
        for dev in devices:
            held = try_acquire(1, [dev], lockdir)
            print(f"gpu {dev}: {'free' if held else 'in use'}")
            release(held or {})
        if not devices:
            print(f"no GPUs found (set ${ENV_GPUS}, or check nvidia-smi)")
        return

    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        run(args.n, cmd, lockdir=args.lockdir, poll=args.poll, timeout=args.timeout)
    except (ValueError, TimeoutError) as e:
        raise SystemExit(f"exoflow.gpus: {e}") from None


if __name__ == "__main__":
    main()
