"""Data-parallel training on this CPU: 2 processes under torchrun (gloo), as the rules launch
them with engine.processes: 2 (tests/test_e2e.py runs them through Snakemake with ZeRO-2).

Same global batch and data order as one process, so the loss curve is the 1-process curve up to
float summation order; a 2-process job killed with SIGKILL resumes and ends where an
uninterrupted one does.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from exoflow.io import read_json
from exoflow.plan import Plan
from tests.helpers import ROOT, make_base, make_data, tiny_runtime, tiny_stage

SCRIPT = ROOT / "workflow_scripts" / "train_stage.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENGINE = {"deepspeed": None, "gpus": 0, "num_threads": 1, "logging_steps": 4, "checkpoint_every": 4}
# The tolerance of a curve against the 1-process one: the same arithmetic summed in another
# order (gradients all-reduced over 2 processes), measured ~1e-7 here.
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    train, test = make_data(root / "data")
    return root, make_base(root / "base"), train, test


def train_cmd(tiny, name, stage="sft", procs=1, **engine):
    root, base, train, test = tiny
    d = root / name
    launch = TORCHRUN[:-1] + [str(procs)] if procs > 1 else [sys.executable]
    runtime = tiny_runtime(**(ENGINE | engine))
    return [*launch, str(SCRIPT), "--stage", stage, "--base", str(base), "--train", str(train),
            "--test", str(test), "--model", str(d / "out"), "--metrics",
            str(d / "out" / "metrics.json"), "--work-dir", str(d / "work"),
            "--log-dir", str(d / "logs"), "--params", json.dumps(tiny_stage(epochs=4)),
            "--runtime", runtime.to_json()], d


def env():
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(cmd):
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.fixture(scope="module")
def one_process(tiny):
    c, d = train_cmd(tiny, "one")
    run(c)
    return read_json(d / "out" / "metrics.json")


def assert_same_run(m, ref, test_metric="test_nll"):
    assert [e["step"] for e in m["loss_curve"]] == [e["step"] for e in ref["loss_curve"]]
    for a, b in zip(m["loss_curve"], ref["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=TOL), a["step"]
    assert m[test_metric] == pytest.approx(ref[test_metric], abs=TOL)


def test_two_processes_train_like_one(tiny, one_process):
    c, d = train_cmd(tiny, "two", procs=2)
    run(c)
    m = read_json(d / "out" / "metrics.json")
    assert m["run"]["world_size"] == 2 and m["run"]["wrapped_model"] == "DistributedDataParallel"
    assert m["run"]["gradient_accumulation_steps"] == 1 and one_process["run"]["world_size"] == 1
    assert m["run"]["deepspeed_zero_stage"] is None
    assert m["global_step"] == 32
    assert_same_run(m, one_process)


def workers_of(d) -> list[int]:
    """PIDs of processes whose command line names the folder ``d``."""
    pids = []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and str(d).encode() in open(f"/proc/{p}/cmdline", "rb").read():
                pids.append(int(p))
        except OSError:
            pass
    return pids


def test_killed_two_process_job_resumes(tiny, one_process):
    """SIGKILL to the torchrun launcher once checkpoint-8 exists: its two workers (each in a
    session of its own) die with it rather than train on; the rerun resumes from the checkpoint
    and its curve (every step) and test loss equal the uninterrupted 1-process run's."""
    c, d = train_cmd(tiny, "killed", procs=2)
    proc = subprocess.Popen(c, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (d / "work" / "checkpoint-8" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint-8 before the end"
        time.sleep(0.02)
    assert len(workers_of(d)) == 3  # torchrun and 2 workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while workers_of(d) and time.time() < deadline:
        time.sleep(0.1)
    assert workers_of(d) == [], "torchrun's workers outlived it"
    assert not (d / "out" / "metrics.json").exists()
    run(c)
    m = read_json(d / "out" / "metrics.json")
    assert m["resumed_from"] is not None and int(m["resumed_from"].rsplit("-", 1)[1]) >= 8
    assert m["run"]["world_size"] == 2
    assert_same_run(m, one_process)
    assert m["train_loss"] == pytest.approx(one_process["train_loss"], abs=TOL)


def test_the_rules_launch_engine_processes():
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cpu = dict(cfg, engine=dict(cfg["engine"], gpus=0, processes=2))
    assert Plan(cpu, python="py").train_launcher() == (
        "py -m torch.distributed.run --standalone --nproc_per_node 2")
    assert Plan(dict(cfg, engine=dict(cfg["engine"], gpus=0)), python="py").train_launcher() == "py"
    assert Plan(cfg, python="py").processes() == 4  # null: one per GPU (the original's 4)


@pytest.mark.slow  # a minute; test_trainer runs ZeRO-2 under torchrun by default
def test_lora_under_zero2_with_two_processes(tiny):
    """LoRA RM training in 2 processes with DeepSpeed ZeRO-2 = 1 process, plain PyTorch: the
    same loss at every step and the same merged weights saved (a plain folder)."""
    from safetensors.torch import load_file

    env_ds = dict(deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"), lora={"rank": 4})
    c1, d1 = train_cmd(tiny, "lora_one", stage="rm", lora={"rank": 4})
    c2, d2 = train_cmd(tiny, "lora_two", stage="rm", procs=2, **env_ds)
    run(c1)
    run(c2)
    one, two = (read_json(d / "out" / "metrics.json") for d in (d1, d2))
    assert two["run"]["world_size"] == 2 and two["run"]["deepspeed_zero_stage"] == 2
    assert two["run"]["lora"] and two["run"]["trainable_params"] == one["run"]["trainable_params"]
    assert_same_run(two, one, "test_mean_margin")
    a, b = (load_file(str(d / "out" / "model.safetensors")) for d in (d1, d2))
    assert set(a) == set(b) and not any("lora" in k for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
