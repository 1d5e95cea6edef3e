"""A job never runs twice at once: each workflow script holds an exclusive OS lock on every
output it makes for as long as it runs.

Snakemake's own lock does not guarantee this: when a second ``snakemake`` in the same folder
exits, it removes the whole ``.snakemake/locks/`` folder, so a third one on an overlapping
target is no longer refused and would run the same jobs as the first. Here every output ``P``
of a script (the arguments its :class:`~exoflow.cli.ScriptParser` tags ``output``) gets the lock
file ``.exoflow-lock-<name>`` beside it, held with ``fcntl.flock`` from argument parsing to the
process's end, then removed; the kernel drops a lock when its holder dies, so a killed job
leaves no lock held (its file stays until the next job on that output ends).
A second process that would make the same output exits at once with one line naming the
process that holds it. Under torchrun only the first process of a job takes the locks (its
other processes make the same outputs with it).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

from .errors import ExoflowError

__all__ = ["LOCK_PREFIX", "JobLockError", "hold", "release_all"]

LOCK_PREFIX = ".exoflow-lock-"
_HELD: list = []  # open lock files of this process


class JobLockError(ExoflowError, RuntimeError):
    """Another process is making the same output."""


def lock_path(output) -> Path:
    p = Path(output)
    return p.parent / f"{LOCK_PREFIX}{p.name}"


def _first_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("RANK", "0") == "0"


def _take(out) -> tuple:
    """``(open file, lock path, folders made for it)`` holding ``out``'s lock."""
    path = lock_path(out)
    made = []  # the folders made for the lock, deepest first
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            break
        made.append(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip().splitlines()
            f.close()
            who = holder[0] if holder else "another process"
            cmd = f" ({holder[1][:200]})" if len(holder) > 1 else ""
            raise JobLockError(f"{out} is being made by {who}{cmd}; this job would make it "
                               "twice at once: wait for that one to end (or stop it) and "
                               "run again") from None
        try:  # the holder that ended may have removed the file we locked: lock the new one
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n{' '.join(sys.argv)}\n")
    f.flush()
    return f, path, made


def hold(outputs) -> None:
    """Take the lock of every path of ``outputs`` (creating its folder), or raise
    :class:`JobLockError` naming the process that holds one (taking none of them)."""
    if not _first_process():
        return
    taken: list = []
    try:
        for out in outputs:
            taken.append(_take(out))
    except BaseException:
        _drop(taken)
        raise
    _HELD.extend(taken)


def _drop(held: list) -> None:
    while held:
        f, path, made = held.pop()
        try:
            path.unlink()  # while still holding it (see _take)
        except OSError:
            pass
        f.close()
        for folder in made:  # folders made only for the lock, left empty by a failed job
            try:
                folder.rmdir()
            except OSError:
                break


def release_all() -> None:
    """Drop every lock this process holds, removing its lock files (and a folder made only
    for one, if they are empty). A killed process leaves its file, unheld: the next job takes it."""
    _drop(_HELD)
