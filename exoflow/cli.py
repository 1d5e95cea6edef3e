"""What every workflow script does with an error: one line, non-zero exit, no traceback.

    if __name__ == "__main__":
        cli.run(main)

:func:`run` calls ``main()``; an :class:`~exoflow.errors.ExoflowError` (bad input, a corrupt
file, a diverged run), a missing file or a malformed ``--params`` JSON ends the process with
``error: <message>`` on stderr and exit status 1, which is all a Snakemake log then holds.
``--debug`` anywhere on the command line (it is removed before ``main`` parses it) or
``EXOFLOW_DEBUG=1`` in the environment re-raises instead, with the traceback. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys

from .errors import ExoflowError

DEBUG_ENV = "EXOFLOW_DEBUG"


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run(main, argv: list[str] | None = None):
    """Run ``main(argv)`` with the package's errors turned into one line and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    if debug:
        return _main_reporting_memory(main, argv)
    try:
        return _main_reporting_memory(main, argv)
    except (ExoflowError, FileNotFoundError) as e:
        _fail(str(e))
    except json.JSONDecodeError as e:  # a --params / --engine argument that is not JSON
        _fail(f"a JSON argument is not valid JSON ({e})")


def _main_reporting_memory(main, argv):
    out = main(argv)
    report_gpu_memory()
    return out


def report_gpu_memory() -> None:
    """On a GPU, one log line with this process's peak allocated memory (what
    scripts/gpu_report.py reads per stage); nothing on the CPU."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    peak = max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
    rank = os.environ.get("RANK", "0")
    print(f"[exoflow] peak GPU memory (rank {rank}): {peak / 2**30:.2f} GiB", file=sys.stderr,
          flush=True)


def _fail(message: str):
    # A progress bar may have left the cursor mid-line: the error starts a line of its own.
    sys.stdout.flush()
    print(f"\nerror: {message}", file=sys.stderr, flush=True)
    sys.exit(1)
