"""What made each output, kept beside it, so that results stay honest when copied.

Snakemake remembers the parameters and code of every job in ``.snakemake/metadata``, which a
copy of ``results/``, a fresh clone or ``--drop-metadata`` loses: results copied without it were
read as up to date under any config. So every workflow script, once it has succeeded, writes a
*job record* beside its first output (:func:`record_path`: ``<dir>/.exoflow-job.<name>.json``):
the rule, the wildcards, the outputs and every ``params`` value exactly as the rule passed it
(the code hash among them). The records travel with the results.

When the Snakefile is read, :func:`stale_jobs` compares every record under ``results/<run>/``
with what the rule would pass now; a job whose outputs all exist and whose record differs is
*stale*: the Snakefile lists it on stderr with the keys that changed (a dry run shows it too)
and has Snakemake re-make its outputs (``--forcerun``), so nothing downstream reads them. A
record that agrees re-runs nothing, whatever ``.snakemake/`` holds; outputs without a record
(made before records existed) are left to Snakemake's own tracking.

No torch, no Snakemake: the Snakefile passes each record's expected params in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RECORD_PREFIX", "Stale", "read_records", "record_path", "stale_jobs", "write_record"]

RECORD_PREFIX = ".exoflow-job."


def record_path(first_output) -> Path:
    """Where the job record of the job whose first output is ``first_output`` lives."""
    p = Path(first_output)
    return p.parent / f"{RECORD_PREFIX}{p.name}.json"


def write_record(script: str, outputs: list[str], params: dict[str, str],
                 wildcards: dict[str, str]) -> Path | None:
    """Write the job record (atomically: a reader never sees half of one); None without
    outputs. ``params``: each value as the script received it (a string); the rule that made
    the outputs is found again from their paths."""
    if not outputs:
        return None
    path = record_path(outputs[0])
    rec = {"script": script, "outputs": [str(o) for o in outputs], "params": params,
           "wildcards": wildcards}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_records(results_dir) -> list[tuple[Path, dict]]:
    """Every readable job record under ``results_dir`` (a broken one is skipped: its outputs
    then count as made without a record)."""
    out = []
    root = Path(results_dir)
    if not root.is_dir():
        return out
    for path in sorted(root.rglob(f"{RECORD_PREFIX}*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("params"), dict) and rec.get("outputs"):
            out.append((path, rec))
    return out


@dataclass
class Stale:
    """A job whose outputs exist but were made with other params than the plan's now."""

    rule: str
    outputs: list[str]
    changes: list[str]  # "name: what changed", one per differing param

    def line(self) -> str:
        what = self.outputs[0] + (f" (+{len(self.outputs) - 1} more)" if len(self.outputs) > 1
                                  else "")
        return f"stale: {what} ({self.rule}): {'; '.join(self.changes)}; re-made"


def _json_changes(name: str, old: str, new: str) -> str:
    """``name`` and, when both are JSON objects, the keys whose values differ."""
    try:
        a, b = json.loads(old), json.loads(new)
    except ValueError:
        a = b = None
    if isinstance(a, dict) and isinstance(b, dict):
        return ", ".join(f"{k} {_short(x)} -> {_short(y)}" for k, x, y in _leaf_diffs(name, a, b))
    if name == "code":
        return "code changed"
    return f"{name} {_short(old)} -> {_short(new)}"


def _leaf_diffs(prefix: str, a: dict, b: dict):
    """(dotted key, old, new) of every value that differs, nested objects followed."""
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            yield from _leaf_diffs(f"{prefix}.{k}", x, y)
        elif x != y:
            yield f"{prefix}.{k}", x, y


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= 60 else s[:57] + "..."


# What the stage targets of the Snakefile are made from (paths under results/<run>/): a stale
# output outside the requested targets' stages is listed, not re-made (it will be when asked for)
_DATA = ("data/pref/", "data/p2r/", "data/stats")
STAGE_SCOPES = {
    "data": _DATA,
    "models": (*_DATA, "models/tokenizer/", "models/base/", "models/sft/", "models/rm/"),
    "labels": (*_DATA, "models/tokenizer/", "models/base/", "models/sft/", "models/rm/",
               "data/sft_samples/", "data/rm_labels/"),
}


def in_scope(output: str, results_dir, targets) -> bool:
    """Whether ``output`` is made for ``targets`` (Snakemake's requested targets; none: the
    default, everything): only the stage targets of :data:`STAGE_SCOPES` narrow it."""
    targets = list(targets or [])
    if not targets or any(t not in STAGE_SCOPES for t in targets):
        return True
    rel = Path(output).as_posix().removeprefix(Path(results_dir).as_posix() + "/")
    return any(rel.startswith(p) for t in targets for p in STAGE_SCOPES[t])


def stale_jobs(results_dir, expected) -> list[Stale]:
    """The stale jobs under ``results_dir``. ``expected(first_output)``: ``(rule, params)`` of
    the rule that makes that file now and the params it passes for it (``{name: str}``), or
    None when no planned rule makes it (its record is then ignored)."""
    out = []
    for _, rec in read_records(results_dir):
        outputs = [str(o) for o in rec["outputs"]]
        if not all(Path(o).exists() for o in outputs):
            continue  # Snakemake makes a missing output anyway
        found = expected(outputs[0])
        if found is None:
            continue
        rule, want = found
        have = rec["params"]
        # the params the job was given (a rule's params that its script does not take change
        # nothing it makes; the code hash is recorded apart from them)
        changes = [_json_changes(k, str(have[k]), str(want[k])) for k in sorted(want)
                   if k in have and str(have[k]) != str(want[k])]
        if changes:
            out.append(Stale(str(rule), outputs, changes))
    return out


# ---- the Snakefile's side: what a rule passes now, and forcing the stale jobs ---------------


def call_param(f, wildcards):
    """A params function's value for ``wildcards``, called as Snakemake calls it (by the names
    of its arguments: wildcards, input, ...; the first one is the wildcards whatever its
    name); the input, output and the others are not known here (None)."""
    import inspect

    names = list(inspect.signature(f).parameters)
    known = {"wildcards": wildcards, "input": None, "output": None, "threads": None,
             "resources": None}
    args = [wildcards] if names and names[0] not in known else []
    kwargs = {n: known[n] for n in names[len(args):] if n in known}
    return f(*args, **kwargs)


def planned_params(workflow, path):
    """``(rule name, {param: str})`` of the job of ``workflow`` (Snakemake's) that makes
    ``path`` now, or None when no rule makes it."""
    from types import SimpleNamespace

    rule = next((r for r in workflow.rules if r.is_producer(path)), None)
    if rule is None:
        return None
    w = SimpleNamespace(**dict(rule.get_wildcards(path)))
    out = {}
    for key, value in rule.params.items():
        if callable(value):
            try:
                value = call_param(value, w)
            except Exception:
                continue
        out[key] = str(value)
    return rule.name, out


def dag_settings():
    """The DAG settings Snakemake will build the DAG with: its API hands them to the workflow
    only after the Snakefile is read, so they are found on the stack of that call (Snakemake
    9's DAGApi); None when the Snakefile is read for something else (--lint, a job's own
    process)."""
    import inspect

    for frame in inspect.stack():
        obj = frame.frame.f_locals.get("self")
        settings = getattr(obj, "dag_settings", None)
        if type(obj).__name__ == "DAGApi" and settings is not None:
            return settings
    return None


def force_stale_jobs(workflow, results_dir) -> list[Stale]:
    """Every job whose outputs were made with other params than the plan's now: one line each
    on stderr, and re-made (--forcerun) when the requested targets need it, whatever
    .snakemake/ remembers. Not inside a job that an executor runs (it reads the Snakefile
    too). Returns the stale jobs."""
    import sys

    settings = dag_settings()
    if settings is None or getattr(settings, "target_jobs", None):
        return []
    stale = stale_jobs(results_dir, lambda path: planned_params(workflow, path))
    targets = [str(t) for t in (getattr(settings, "targets", None) or ())]
    forced = set()
    for s in stale:
        if in_scope(s.outputs[0], results_dir, targets):
            print(f"exoflow: {s.line()}", file=sys.stderr)
            forced |= set(s.outputs)
        else:
            print(f"exoflow: {s.line().removesuffix('; re-made')}; not needed by "
                  f"{' '.join(targets)}: re-made when a target needs it", file=sys.stderr)
    if forced:
        settings.forcerun = frozenset(set(settings.forcerun or ()) | forced)
    return stale
