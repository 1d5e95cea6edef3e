"""SIGTERM and Ctrl-C the way clusters and people send them.

* **A training job** (:class:`GracefulStop`, used by :mod:`exoflow.recipe`): SIGTERM (what SLURM
  sends at a time limit, a grace period before SIGKILL) or SIGINT is noted; at the end of the
  optimizer step under way every process agrees to stop, the Trainer saves a resume checkpoint
  in the work folder, and the job ends with one line saying where it resumes from (the next
  run of the same rule does).
* **Any other script** (:func:`exit_on_sigterm`, from :func:`exoflow.cli.run`): SIGTERM ends it
  as an error line would, so that its ``finally`` blocks run (output locks released, nothing
  half-written kept).
* **Snakemake** (:func:`forward_interrupt`, installed when the Snakefile is read): Snakemake
  answers Ctrl-C ("Terminating processes on user request") by waiting for its running jobs,
  which it does not signal; the handler sends SIGTERM to every process below Snakemake (the
  jobs' shells, scripts and torchrun workers, which sit in sessions of their own) and then lets
  Snakemake stop as it does.

No torch here; Linux's ``/proc`` finds the processes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from .errors import ExoflowError

__all__ = ["GracefulStop", "Stopped", "descendants", "exit_on_sigterm", "forward_interrupt"]


class Stopped(ExoflowError):
    """A job ended by a signal (one line, exit status 1)."""


def exit_on_sigterm() -> None:
    """SIGTERM raises :class:`Stopped` in the main thread (a no-op elsewhere)."""

    def stop(signum, frame):
        raise Stopped(f"stopped by {signal.Signals(signum).name}; run snakemake again to "
                      "re-make what this job makes")

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        pass


class GracefulStop:
    """While entered: SIGTERM and SIGINT only set :attr:`signum` (the first one); the previous
    handlers come back on exit. A second SIGINT (Ctrl-C twice) stops at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _note(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            print(f"[exoflow] {signal.Signals(signum).name}: saving a resume checkpoint at the "
                  "end of this optimizer step, then stopping", flush=True)

    def __enter__(self):
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._note)
            except ValueError:  # not the main thread: signals stay as they were
                pass
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), from /proc; [] where there is none."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = text[text.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


WAIT_S = 300  # how long Snakemake waits for its jobs to stop after Ctrl-C


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not text[text.rfind(")") + 2:].startswith("Z")


def forward_interrupt() -> None:
    """In Snakemake's process: SIGINT (Ctrl-C, ``kill -INT``) first sends SIGTERM to every
    process below it, then raises KeyboardInterrupt as Python's handler does, for Snakemake
    to stop (see the module docstring). A no-op outside the main thread."""

    waiting = []

    def handler(signum, frame):
        if waiting:  # Ctrl-C again: stop waiting
            raise KeyboardInterrupt
        waiting.append(True)
        below = descendants(os.getpid())
        for pid in below:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        if below:
            print(f"exoflow: Ctrl-C: stopping {len(below)} job process(es) (a training job saves "
                  f"where it resumes from); at most {WAIT_S} s, Ctrl-C again not to wait",
                  file=sys.stderr, flush=True)
        deadline = time.time() + WAIT_S
        while time.time() < deadline and any(_alive(p) for p in below):
            time.sleep(0.2)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        pass
