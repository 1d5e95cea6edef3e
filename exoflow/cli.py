"""What every workflow script shares: its argument list, and one line for an error.

**Arguments, each listed once.** A script declares its arguments with :class:`ScriptParser`,
each with the place of its rule it comes from: ``p.input("rm", ...)`` is ``--rm``, read from the
rule's ``input.rm``; ``p.output``, ``p.param`` (a value, or a parameter section as JSON),
``p.wildcard`` and ``p.threads`` likewise. The rule's shell line is generated
from that list (:func:`shell_args`, called by ``rules/common.smk``), so a rule and its script
cannot drift apart: a name the rule lacks fails the dry run. By hand, the same flags::

    python workflow_scripts/label_rewards.py --rm results/tiny/models/rm ...

**Errors.** ``if __name__ == "__main__": cli.run(main)``:

:func:`run` calls ``main()``; an :class:`~exoflow.errors.ExoflowError` (bad input, a corrupt
file, a diverged run), a missing file, an OS error on a file (a full disk: its path and the room
left) or a malformed JSON argument ends the process with
``error: <message>`` on stderr and exit status 1, which is all a Snakemake log then holds.
``--debug`` anywhere on the command line (it is removed before ``main`` parses it) or
``EXOFLOW_DEBUG=1`` in the environment re-raises instead, with the traceback. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import locks
from .errors import ExoflowError
from .io import disk_error, os_error_line

DEBUG_ENV = "EXOFLOW_DEBUG"
SOURCES = ("input", "output", "params", "wildcards", "threads")
# The code hash of the rule running the script (shell_args adds it): with it, the script
# leaves a job record beside its outputs (exoflow.provenance)
CODE_FLAG = "--exoflow-code"

# The job parse_args read (rule, outputs, params and wildcards as given), for the job record
# run() writes once main() has succeeded (exoflow.provenance).
_JOB: dict = {}


def value(text: str):
    """A command-line value: JSON (``null``, ``true``, ``42``, ``{...}``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class ScriptParser(argparse.ArgumentParser):
    """argparse for a workflow script, each argument tagged with the place of its rule it is
    read from (:data:`SOURCES`); :func:`shell_args` writes the rule's shell words from it."""

    def __init__(self, doc: str, launched: bool = False):
        super().__init__(description=doc.strip().splitlines()[0],
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
        self.sources: dict[str, str] = {}
        self.sections: dict[str, type] = {}
        if launched:  # torchrun's and deepspeed's own argument
            self.add_argument("--local_rank", "--local-rank", type=int, default=-1,
                              help=argparse.SUPPRESS)
        self.add_argument(CODE_FLAG, dest="exoflow_code", default=None, help=argparse.SUPPRESS)

    def _tagged(self, source: str, name: str, help: str, **kwargs):
        self.sources[name] = source
        kwargs.setdefault("required", "default" not in kwargs and kwargs.get("nargs") not in
                          ("?", "*"))
        return self.add_argument("--" + name.replace("_", "-"), dest=name,
                                 help=f"{help} [rule {source}]", **kwargs)

    def input(self, name: str, help: str, **kwargs):
        return self._tagged("input", name, help, **kwargs)

    def output(self, name: str, help: str, **kwargs):
        return self._tagged("output", name, help, **kwargs)

    def param(self, name: str, help: str, type=value, section=None, **kwargs):
        """A rule's params value; with ``section`` (a class of :mod:`exoflow.config`) a JSON
        object, or the path of a JSON file, read as that class once parsed (its errors are
        one line, as every error of a script)."""
        if section is not None:
            self.sections[name], type = section, str
        return self._tagged("params", name, help, type=type, **kwargs)

    def parse_args(self, args=None, namespace=None):
        """The arguments, sections read as their classes, and the job's outputs locked
        (:mod:`exoflow.locks`: no two processes make the same output at once)."""
        raw = list(sys.argv[1:] if args is None else args)
        ns = super().parse_args(args, namespace)
        _JOB.clear()
        if ns.exoflow_code is not None:  # run by a rule
            _JOB.update(script=Path(sys.argv[0]).stem, **self._as_given(raw, ns))
            _JOB["params"].setdefault("code", ns.exoflow_code)
        for name, cls in self.sections.items():
            if getattr(ns, name) is not None:
                setattr(ns, name, cls.from_json(getattr(ns, name),
                                                 cls.SECTION or "--" + name.replace("_", "-")))
        locks.hold([getattr(ns, n) for n, src in self.sources.items()
                    if src == "output" and getattr(ns, n)])
        return ns

    def _as_given(self, raw: list[str], ns) -> dict:
        """The job's outputs, and its params and wildcards as the command line gave them."""
        given: dict = {}
        for i, word in enumerate(raw[:-1]):
            if word.startswith("--"):
                given.setdefault(word[2:].replace("-", "_"), raw[i + 1])
        pick = lambda src: {n: given[n] for n, s in self.sources.items()  # noqa: E731
                            if s == src and n in given}
        return {"outputs": [str(getattr(ns, n)) for n, s in self.sources.items()
                            if s == "output" and getattr(ns, n)],
                "params": pick("params"), "wildcards": pick("wildcards")}

    def wildcard(self, name: str, help: str, **kwargs):
        return self._tagged("wildcards", name, help, **kwargs)

    def threads(self):
        """``--threads``: the job's CPU threads (torch's), the rule's ``{threads}``."""
        return self._tagged("threads", "threads", "torch CPU threads", type=int, default=None)


def add_scoring_args(p: ScriptParser, what: str) -> None:
    """The arguments both evaluations (a checkpoint's samples, the dataset's responses) take
    after their own: the RM's layout, gold or not, the precision, threads and the two outputs
    (``what``: which models the precision applies to)."""
    from .config import LayoutParams

    p.param("rm_layout", "the RM's max_len and max_gen_len, as JSON", section=LayoutParams)
    p.param("gold", "also the synthetic gold reward (true/false)")
    p.param("dtype", f"the precision to load {what} in (null: their own)", default=None)
    p.threads()
    p.output("summary", "reward.json")
    p.output("rewards", "per-prompt rewards, JSON Lines")


def script_parser(path) -> ScriptParser:
    """The :class:`ScriptParser` of the workflow script at ``path`` (its ``make_parser()``; a
    script imports only this module and :mod:`exoflow.config` before ``main`` runs)."""
    import importlib.util
    from pathlib import Path

    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"exoflow_workflow_script_{path.stem}", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.make_parser()


def shell_args(parser: ScriptParser) -> str:
    """The shell words a rule passes to the script of ``parser``: ``--<name> {<source>.<name>:q}``
    for every argument (``{threads}`` for the threads), in the script's order."""
    words = [f"{CODE_FLAG} {{params.code}}"]
    for name, source in parser.sources.items():
        flag = "--" + name.replace("_", "-")
        words.append(f"{flag} {{threads}}" if source == "threads"
                     else f"{flag} {{{source}.{name}:q}}")
    return " ".join(words)


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run(main, argv: list[str] | None = None):
    """Run ``main(argv)`` with the package's errors turned into one line and exit status 1."""
    from .signals import exit_on_sigterm

    argv = list(sys.argv[1:] if argv is None else argv)
    exit_on_sigterm()
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        if debug:
            return _finished(_main_reporting_memory(main, argv))
        try:
            return _finished(_main_reporting_memory(main, argv))
        except (ExoflowError, FileNotFoundError) as e:
            _fail(str(e))
        except json.JSONDecodeError as e:  # a JSON argument that is not JSON
            _fail(f"a JSON argument is not valid JSON ({e})")
        except OSError as e:  # a full disk, a read-only folder: one line, nothing half-made
            _fail(os_error_line(e))
        except Exception as e:  # a full disk as a library words it (safetensors, torch)
            full = disk_error(e, "")
            if full is None:
                raise
            _fail(os_error_line(full))
    finally:
        locks.release_all()


def _finished(out):
    """After a successful ``main``: the job record beside its outputs (the main process's)."""
    if _JOB and os.environ.get("RANK", "0") == "0":
        from .provenance import write_record

        write_record(_JOB["script"], _JOB["outputs"], _JOB["params"], _JOB["wildcards"])
    return out


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
