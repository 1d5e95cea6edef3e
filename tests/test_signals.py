"""SIGTERM to a training job (a SLURM time limit) and Ctrl-C to Snakemake, through the real CLI
and the real Snakemake: the job saves a resume checkpoint at the end of the step under way,
ends with one line saying where it resumes from, leaves no lock behind; the next run resumes
there and reports every step once (TensorBoard included); Ctrl-C ends every job with
Snakemake."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from exoflow.io import read_json
from tests.helpers import (
    SCRIPTS,
    align_params,
    copy_workflow,
    make_align_data,
    tiny_runtime,
)

STEPS = 300


def _wait_for(path, pattern, proc, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, path.read_text()[-3000:] if path.exists() else "exited"
        if path.exists() and re.search(pattern, path.read_text(errors="replace")):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in {path}")


def test_sigterm_saves_where_the_job_resumes(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_align_data(tmp_path / "data")
    d = tmp_path / "run"
    # no Trainer checkpoint before the end (checkpoint_every > max_steps): only the signal's
    params = align_params(max_steps=STEPS, save_every=STEPS // 2)
    runtime = tiny_runtime(checkpoint_every=10 * STEPS)
    cmd = [sys.executable, str(SCRIPTS / "train_align.py"), "--policy", str(data.sft),
           "--train", str(data.k4), "--ref-logps", str(data.cache), "--metrics",
           str(d / "out" / "metrics.json"), "--work-dir", str(d / "work"), "--log-dir",
           str(d / "logs"), "--align", params.to_json(), "--runtime", runtime.to_json(),
           "--ref-code", "null"]
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _wait_for(log, rf"\b([2-9]\d|1\d\d)/{STEPS}\b", proc)  # a few dozen steps in
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 1
    text = log.read_text()
    last = [ln for ln in text.splitlines() if ln.strip()][-1]
    m = re.fullmatch(rf"error: train_align out: stopped by SIGTERM after optimizer step (\d+) of "
                     rf"{STEPS}; it resumes from {d}/work/checkpoint-(\d+) when run again "
                     r"\(snakemake re-runs it\)", last)
    assert m and m.group(1) == m.group(2), last
    k = int(m.group(1))
    assert 0 < k < STEPS and (d / "work" / f"checkpoint-{k}" / "trainer_state.json").exists()
    assert not (d / "out" / "metrics.json").exists()
    assert not [p for p in tmp_path.rglob(".exoflow-lock-*")]

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = read_json(d / "out" / "metrics.json")
    assert metrics["resumed_from"] == str(d / "work" / f"checkpoint-{k}")
    assert [e["step"] for e in metrics["loss_curve"]] == list(range(1, STEPS + 1))
    acc = EventAccumulator(str(d / "logs"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, STEPS + 1)), steps[:5]  # each step once, the killed run's
    assert len(list((d / "logs").glob("events.out.tfevents.*"))) == 1  # one clean stream


@pytest.mark.slow  # ~1 min: SFT must be under way; the SIGTERM test covers the job's side
def test_ctrl_c_on_snakemake_ends_every_job(tmp_path):
    """SIGINT to Snakemake's PID (what Ctrl-C sends it) while train_sft runs: Snakemake used to
    wait for the job, which trained on; now the job saves, says where it resumes from, and
    Snakemake and every process below it end."""
    wd = copy_workflow(tmp_path)
    (wd / "long.yaml").write_text("sft: {epochs: 20}\nengine: {checkpoint_every: 100000}\n")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "results/tiny/models/sft/config.json",
           "--configfile", "configs/tiny.yaml", "long.yaml"]
    out = tmp_path / "snakemake.txt"
    log = wd / "results" / "tiny" / "logs" / "train_sft" / "log.log"
    with open(out, "w") as f:
        proc = subprocess.Popen(cmd, cwd=wd, stdout=f, stderr=subprocess.STDOUT)
        try:
            # the Trainer's bar (not "Loading weights: 52/52"): SFT well under way
            _wait_for(log, r"\| *[1-9]\d+/\d{3,} \[", proc, seconds=600)
            from exoflow.signals import descendants

            below = descendants(proc.pid)
            assert below
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    alive = [p for p in below if os.path.exists(f"/proc/{p}") and
             not open(f"/proc/{p}/stat").read().split(") ")[1].startswith("Z")]
    assert not alive, [open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:200]
                       for p in alive]
    last = [ln for ln in log.read_text().splitlines() if ln.strip()][-1]
    assert re.fullmatch(r"error: train_sft: stopped by SIGTERM after optimizer step \d+ of \d+; "
                        r"it resumes from results/tiny/work/sft/checkpoint-\d+ when run again "
                        r"\(snakemake re-runs it\)", last), last
    assert not list((wd / "results").rglob(".exoflow-lock-*"))
