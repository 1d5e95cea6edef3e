"""Run the real Snakemake workflow in a scratch copy of the repository."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "config.yaml", "rules", "schemas", "workflow_scripts", "configs", "envs", "profiles", "report", "exoflow"]


def copy_workflow(dest: Path) -> Path:
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


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
