"""GPU placement on a workstation (exoflow.gpus), on the CPU with fake device ids."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from itertools import combinations
from pathlib import Path

import pytest
import yaml

from exoflow import gpus
from tests.helpers import ROOT

# A wrapped command: records its CUDA_VISIBLE_DEVICES and when it ran, holding it for a while.
RECORD = textwrap.dedent("""
    import json, os, sys, time
    t0 = time.time()
    time.sleep(float(sys.argv[2]))
    with open(sys.argv[1], "w") as f:
        json.dump({"devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": t0,
                   "end": time.time()}, f)
""")


@pytest.fixture
def pool(tmp_path, monkeypatch):
    """Environment for 4 fake GPUs with a private lock folder."""
    env = dict(os.environ, EXOFLOW_GPUS="0,1,2,3", EXOFLOW_GPU_LOCKDIR=str(tmp_path / "locks"))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for k in ("EXOFLOW_GPUS", "EXOFLOW_GPU_LOCKDIR"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "record.py").write_text(RECORD)
    return env


def wrapped(n, *cmd):
    return [sys.executable, "-m", "exoflow.gpus", "run", "--n", str(n), "--poll", "0.1", "--", *cmd]


def check_placement(records, n_devices):
    """No two commands that overlapped in time shared a device; every device got used."""
    for a, b in combinations(records, 2):
        overlap = a["start"] < b["end"] and b["start"] < a["end"]
        shared = set(a["devices"].split(",")) & set(b["devices"].split(","))
        assert not (overlap and shared), (a, b)
    used = {d for r in records for d in r["devices"].split(",")}
    assert used == {str(i) for i in range(n_devices)}, records


def test_six_jobs_on_four_gpus_never_share_a_device(tmp_path, pool):
    procs = [subprocess.Popen(wrapped(1, sys.executable, str(tmp_path / "record.py"),
                                      str(tmp_path / f"r{i}.json"), "1.0"), env=pool)
             for i in range(6)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    records = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(6)]
    assert all(len(r["devices"].split(",")) == 1 for r in records)
    check_placement(records, 4)
    # 6 one-second jobs on 4 devices: at most 4 at once, so some had to wait for a free one
    starts = sorted(r["start"] for r in records)
    assert starts[4] >= min(r["end"] for r in records) - 0.05


def test_multi_gpu_jobs_get_disjoint_sets(tmp_path, pool):
    sizes = [2, 2, 1, 2, 1]
    procs = [subprocess.Popen(wrapped(n, sys.executable, str(tmp_path / "record.py"),
                                      str(tmp_path / f"r{i}.json"), "0.8"), env=pool)
             for i, n in enumerate(sizes)]
    assert [p.wait(timeout=60) for p in procs] == [0] * len(sizes)
    records = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(len(sizes))]
    assert [len(r["devices"].split(",")) for r in records] == sizes
    check_placement(records, 4)


def test_lock_released_when_the_command_is_killed(tmp_path, pool):
    holder = subprocess.Popen(wrapped(4, "sleep", "60"), env=pool)
    lockdir = Path(pool["EXOFLOW_GPU_LOCKDIR"])
    deadline = time.time() + 20
    while True:
        held = gpus.try_acquire(1, ["0"], lockdir)
        if held is None:
            break  # the holder has them
        gpus.release(held)
        assert time.time() < deadline, "the wrapper never took the devices"
        time.sleep(0.05)
    # exec: the wrapper *is* the command, so killing the command frees its devices
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    held = gpus.try_acquire(4, ["0", "1", "2", "3"], lockdir)
    assert held is not None and sorted(held) == ["0", "1", "2", "3"]
    gpus.release(held)


def test_exit_code_and_crash_release(tmp_path, pool):
    proc = subprocess.run(wrapped(2, sys.executable, "-c", "raise SystemExit(3)"), env=pool)
    assert proc.returncode == 3
    held = gpus.try_acquire(4, ["0", "1", "2", "3"], Path(pool["EXOFLOW_GPU_LOCKDIR"]))
    assert held is not None
    gpus.release(held)


def test_waits_for_a_free_device(tmp_path, pool):
    lockdir = Path(pool["EXOFLOW_GPU_LOCKDIR"])
    held = gpus.try_acquire(4, ["0", "1", "2", "3"], lockdir)
    proc = subprocess.Popen(wrapped(1, sys.executable, str(tmp_path / "record.py"),
                                    str(tmp_path / "r.json"), "0"), env=pool,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert proc.poll() is None  # all 4 busy: still waiting
    os.close(held.pop("2"))      # free device 2
    assert proc.wait(timeout=20) == 0
    assert "waiting for 1 free GPU" in proc.stderr.read()
    assert json.loads((tmp_path / "r.json").read_text())["devices"] == "2"
    gpus.release(held)


def test_passthrough_when_set_or_zero(tmp_path, pool):
    show = [sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"]
    out = subprocess.run(wrapped(2, *show), env=dict(pool, CUDA_VISIBLE_DEVICES="5,7"),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "5,7"  # e.g. set by SLURM: left alone
    out = subprocess.run(wrapped(0, *show), env=pool, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "unset"
    assert not list(Path(pool["EXOFLOW_GPU_LOCKDIR"]).glob("*.lock"))  # took no lock


def test_env_assignments_and_too_many(tmp_path, pool):
    show = [sys.executable, "-c",
            "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['CUDA_VISIBLE_DEVICES'])"]
    out = subprocess.run(wrapped(1, "OMP_NUM_THREADS=3", *show), env=pool, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["3", "0"]
    proc = subprocess.run(wrapped(5, "true"), env=pool, capture_output=True, text=True)
    assert proc.returncode != 0 and "5 GPU(s) requested but this machine has 4" in proc.stderr


def test_device_ids_from_env(monkeypatch):
    monkeypatch.setenv("EXOFLOW_GPUS", " 0, 2,3 ")
    assert gpus.device_ids() == ["0", "2", "3"]
    monkeypatch.setenv("EXOFLOW_GPUS", "")
    assert gpus.device_ids() == []


def test_cpus_per_gpu_and_default_lockdir(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setenv("EXOFLOW_GPUS", ",".join(str(i) for i in range(4)))
    assert gpus.cpus_per_gpu() == max(1, cpus // 4)
    monkeypatch.setenv("EXOFLOW_GPUS", "")
    assert gpus.cpus_per_gpu() == cpus  # no GPU: all CPUs
    monkeypatch.delenv("EXOFLOW_GPU_LOCKDIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/c")
    assert str(gpus.default_lockdir()).startswith("/c/exoflow/gpu_locks/")


def test_gpu_prefix_of_the_plan():
    from exoflow.plan import Plan

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    plan = Plan(cfg, python="/venv/bin/python")
    assert plan.gpu_prefix(0) == "" == gpus.prefix(0)
    assert plan.gpu_prefix(2) == "/venv/bin/python -m exoflow.gpus run --n 2 -- "
    assert gpus.prefix(2) == "python -m exoflow.gpus run --n 2 -- "


def test_local_profile_limits_gpus_and_places_jobs(tmp_path, pool):
    """Snakemake + profiles/local + the wrapper: 6 one-GPU jobs on 4 fake GPUs."""
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "Snakefile").write_text(textwrap.dedent(f'''
        rule all:
            input: expand("r{{i}}.json", i=range(6))

        rule job:
            output: "r{{i}}.json"
            resources: gpu=1
            shell: "python -m exoflow.gpus run --n {{resources.gpu}} -- {sys.executable} {tmp_path / 'record.py'} {{output}} 1.5"
    '''))
    profile = yaml.safe_load((ROOT / "profiles" / "local" / "config.yaml").read_text())
    assert profile["resources"] == {"gpu": "?len(device_ids())"}
    # GPU jobs get CPUs/GPUs threads, not all cores (else only one would run at a time)
    assert {"train_sft", "train_rm", "sample_sft", "label_rewards"} <= set(profile["set-threads"])
    env = dict(pool, PATH=f"{Path(sys.executable).parent}{os.pathsep}{pool['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile",
                           str(ROOT / "profiles" / "local"), "--cores", "8"],
                          cwd=wd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((wd / f"r{i}.json").read_text()) for i in range(6)]
    check_placement(records, 4)
    # gpu is limited to the 4 devices found, so Snakemake itself never starts a 5th GPU job
    # while 4 run: no wrapper ever had to wait for a device
    out = proc.stdout + proc.stderr
    assert re.search(r'Provided resources: gpu=(Resource\("gpu", )?4\b', out), out[-3000:]
    assert "waiting for" not in out, out[-3000:]
