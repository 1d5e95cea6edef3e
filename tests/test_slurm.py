"""profiles/slurm against a real SLURM: a one-node cluster on localhost (scripts/slurm_localhost.sh).

Runs the tiny preset's data stage, tokenizer and base model through
``snakemake --profile profiles/slurm --profile profiles/slurm/tiny.yaml``, with one job
cancelled mid-run to show that ``retries: 1`` resubmits it, and a probe rule asking for GPUs
(fake ones: gres on copies of /dev/null) to show that GPU rules get ``--gpus`` and
CUDA_VISIBLE_DEVICES from SLURM while the tiny preset's rules ask for none.

Needs root and Debian's slurmctld/slurmd/slurm-client/munge (installed with apt-get when
missing); skipped with the reason otherwise.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, copy_workflow

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "scripts" / "slurm_localhost.sh"

# Only for this one-node test cluster, which has no slurmdbd: sacct cannot answer, so the
# executor must ask squeue; and the first status check comes after 1 s instead of 40 s.
TEST_FLAGS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
              "--slurm-keep-successful-logs"]

PROBE_RULE = '''

rule slurm_gpu_probe:
    """Test only: a rule asking for 2 GPUs, its command wrapped like every GPU rule's."""
    output:
        "probe/gpu.txt",
    params:
        prefix=PLAN.gpu_prefix(2),
    resources:
        gpu=2,
    shell:
        "{params.prefix}python probe.py {output}"
'''

PROBE_SCRIPT = """import os, sys
open(sys.argv[1], "w").write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
"""


def _sh(*args, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def slurm(request):
    """A running one-node SLURM; its three daemons are stopped by PID afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root: the test SLURM writes /etc/slurm/slurm.conf and runs slurmd")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed in this Python")
    t0 = time.monotonic()
    proc = _sh("install")
    if proc.returncode != 0:
        pytest.skip(f"cannot install SLURM here: {proc.stderr.strip()[-500:]}")
    t_install = time.monotonic() - t0
    t1 = time.monotonic()
    proc = _sh("up", timeout=120)
    request.addfinalizer(lambda: _sh("down", timeout=60))
    if proc.returncode != 0 and "not written by this script" in proc.stderr:
        pytest.skip(f"a real SLURM is configured here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nSLURM: install {t_install:.1f}s, up {time.monotonic() - t1:.1f}s; {proc.stderr.strip()}")
    return proc


def _squeue(workdir: Path) -> list[dict]:
    """All jobs (finished ones too, for MinJobAge) whose working directory is ``workdir``."""
    fields = ["JobID", "State", "tres-per-job", "Comment", "WorkDir"]
    out = subprocess.run(["squeue", "-h", "-t", "all", "-O", ",".join(f + ":|" for f in fields)],
                         capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        vals = [v.strip() for v in line.split("|")][: len(fields)]
        job = dict(zip(("id", "state", "gpus", "comment", "workdir"), vals))
        if job.get("workdir") and os.path.realpath(job["workdir"]) == os.path.realpath(workdir):
            jobs.append(job)
    return jobs


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def _cancel_once(workdir: Path, comment: str, stop: threading.Event, cancelled: list):
    """scancel the first RUNNING job of ``workdir`` whose comment is ``comment``."""
    while not stop.is_set() and not cancelled:
        for job in _squeue(workdir):
            if job["comment"] == comment and job["state"] == "RUNNING":
                subprocess.run(["scancel", job["id"]], check=True)
                cancelled.append(job["id"])
                return
        time.sleep(0.3)


def _planned(proc) -> dict[str, list[dict]]:
    """rule -> [resources (with threads)] of each job a dry run plans."""
    jobs, rule = {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
            jobs.setdefault(rule, []).append({"threads": 1})
        elif rule and line.strip().startswith("threads:"):
            jobs[rule][-1]["threads"] = int(line.split(":")[1])
        elif rule and line.strip().startswith("resources:"):
            for kv in line.split(":", 1)[1].split(","):
                k, _, v = kv.strip().partition("=")
                jobs[rule][-1][k] = v
        elif not line.strip():
            rule = None
    return jobs


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm is not installed in this Python")
def test_profile_sizes_each_stage(tmp_path):
    """Dry runs (no SLURM needed): what each job of the paper and tiny presets would ask for."""
    wd = copy_workflow(tmp_path)
    snake = [sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm"]
    paper = subprocess.run([*snake, "all"], cwd=wd, capture_output=True, text=True, timeout=300)
    assert paper.returncode == 0, paper.stderr[-3000:]
    jobs = _planned(paper)
    for rule in ("train_sft", "train_rm"):
        (job,) = jobs[rule]
        assert job["gpu"] == "4" and job["threads"] == 32 and job["cpus_per_task"] == "32"
        # no model yet in a dry run: 4 processes x 3 GB, the shortest limit; Snakemake computes
        # both again from the model when it submits the job (exoflow/resources.py)
        assert job["mem_mb"] == "12000" and job["runtime"] == "20"
        assert "--signal=TERM@300" in job["slurm_extra"]  # SIGTERM before the time limit
    for rule in ("sample_sft", "label_rewards"):
        assert all(j["gpu"] == "1" and j["cpus_per_task"] == "8" for j in jobs[rule]), jobs[rule]
    for rule in ("preprocess", "pref_to_rewards", "data_stats"):
        assert all("gpu" not in j and j["cpus_per_task"] == "1" for j in jobs[rule]), jobs[rule]
    assert not any("slurm_partition" in j or "slurm_account" in j
                   for js in jobs.values() for j in js)
    # every job that holds a model sizes itself; the training ones ask for the signal
    gpu_rules = {rule for rule, js in jobs.items() if any(int(j.get("gpu", 0)) for j in js)}
    assert {"train_sft", "train_rm", "sample_sft", "label_rewards"} <= gpu_rules
    for rule in gpu_rules:
        for j in jobs[rule]:
            assert int(j["mem_mb"]) >= 3000 and int(j["runtime"]) >= 20, (rule, j)
            assert ("slurm_extra" in j) == rule.startswith("train_"), (rule, j)
    profiles = {name: yaml.safe_load((ROOT / "profiles" / name).read_text())
                for name in ("slurm/config.yaml", "local/config.yaml")}
    for rule in gpu_rules:
        assert rule in profiles["slurm/config.yaml"]["set-threads"], rule
        assert rule not in profiles["slurm/config.yaml"]["set-resources"], rule
        assert rule in profiles["local/config.yaml"]["set-threads"], rule

    tiny = subprocess.run([*snake, "--profile", "profiles/slurm/tiny.yaml", "all",
                           "--configfile", "configs/tiny.yaml"],
                          cwd=wd, capture_output=True, text=True, timeout=300)
    assert tiny.returncode == 0, tiny.stderr[-3000:]
    jobs = _planned(tiny)
    assert {"train_sft", "train_rm", "sample_sft", "train_tokenizer"} <= set(jobs)
    for rule, js in jobs.items():
        for j in js:
            assert j.get("gpu", "0") == "0", (rule, j)  # no GPU request at all
            assert int(j["cpus_per_task"]) == j["threads"] <= 2, (rule, j)
            assert int(j["mem_mb"]) <= 4000, (rule, j)  # no model yet: the interpreter's

    site = subprocess.run([*snake, "--profile", "profiles/slurm/site.yaml.example", "data",
                           "--configfile", "configs/tiny.yaml"],
                          cwd=wd, capture_output=True, text=True, timeout=300)
    assert site.returncode == 0, site.stderr[-3000:]
    for j in _planned(site)["data_stats"]:
        assert j["slurm_partition"] == "gpu" and j["slurm_account"] == "myproject", j


def test_tiny_stages_run_through_slurm_profile(tmp_path, slurm):
    wd = copy_workflow(tmp_path)
    with open(wd / "Snakefile", "a") as f:
        f.write(PROBE_RULE)
    (wd / "probe.py").write_text(PROBE_SCRIPT)
    env = dict(os.environ)
    # job steps run the rules' `python` from PATH (sbatch --export=ALL): this interpreter's
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for var in ("SLURM_CONF", "CUDA_VISIBLE_DEVICES"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
           "--profile", "profiles/slurm/tiny.yaml",
           "results/tiny/models/base/config.json", "data", "probe/gpu.txt",
           "--configfile", "configs/tiny.yaml", *TEST_FLAGS]

    # cancel the test split's preprocessing once it runs (off the critical path): retries: 1
    # must resubmit it as attempt 2
    stop, cancelled = threading.Event(), []
    watcher = threading.Thread(
        target=_cancel_once, args=(wd, "rule_preprocess_wildcards_test", stop, cancelled),
        daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        stop.set()
        watcher.join(timeout=10)
    took = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    print(f"snakemake --profile profiles/slurm: {took:.1f}s")

    # outputs
    res = wd / "results" / "tiny"
    for p in ["data/pref/train.jsonl", "data/pref/test.jsonl", "data/p2r/train.jsonl",
              "data/p2r/test.jsonl", "data/stats.json", "models/tokenizer/tokenizer.json",
              "models/base/config.json"]:
        assert (res / p).stat().st_size > 0, p

    # every job went through SLURM: one sbatch job per rule job, logs kept by the plugin
    jobs = _squeue(wd)
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["comment"], []).append(job)
    expected = {"rule_preprocess_wildcards_train", "rule_preprocess_wildcards_test",
                "rule_pref_to_rewards_wildcards_train", "rule_pref_to_rewards_wildcards_test",
                "rule_data_stats", "rule_train_tokenizer", "rule_init_base_model",
                "rule_slurm_gpu_probe"}
    assert expected <= set(by_rule), jobs
    logs = wd / ".snakemake" / "slurm_logs"
    for rule in ("train_tokenizer", "init_base_model", "data_stats", "slurm_gpu_probe"):
        assert list((logs / f"rule_{rule}").glob("*.log")), rule

    # the cancelled job came back as attempt 2 and completed
    assert cancelled, "the watcher never saw preprocess[test] running"
    states = sorted(j["state"] for j in by_rule["rule_preprocess_wildcards_test"])
    assert states == ["CANCELLED", "COMPLETED"], by_rule["rule_preprocess_wildcards_test"]
    for comment, js in by_rule.items():
        if comment != "rule_preprocess_wildcards_test":
            assert [j["state"] for j in js] == ["COMPLETED"], js

    # GPUs: the tiny preset asks for none; the probe asks for 2 and SLURM hands them over
    for comment, js in by_rule.items():
        want = "gres:gpu:2" if comment == "rule_slurm_gpu_probe" else "N/A"
        assert all(j["gpus"] == want for j in js), js
    visible = (wd / "probe" / "gpu.txt").read_text()
    assert len(visible.split(",")) == 2, visible


def test_down_stops_the_daemons_by_pid(slurm):
    """Run last in this module: `status` lists the PIDs that `down` (the finalizer) kills."""
    proc = _sh("status")
    assert proc.returncode == 0
    pids = {}
    for line in proc.stdout.splitlines():
        name, _, pid = line.partition(": ")
        if name in ("munged", "slurmctld", "slurmd"):
            assert pid.isdigit(), proc.stdout
            pids[name] = int(pid)
    assert set(pids) == {"munged", "slurmctld", "slurmd"}
    down = _sh("down", timeout=60)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} ({pid}) still running"
    assert not Path("/etc/slurm/slurm.conf").exists()
    assert shutil.which("sinfo")  # the packages stay; only the daemons and our config go
