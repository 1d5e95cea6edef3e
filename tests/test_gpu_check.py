"""The GPU check's parts that run without a GPU: the script's refusal, the shape benchmark's
code at a toy shape, and the per-stage report on a finished run's files."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def test_gpu_check_stops_at_once_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run scripts/gpu_check.sh itself")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing run"]
    assert not (ROOT / "results" / "gpu_check").exists()


def test_shape_benchmark_runs_at_a_toy_shape():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu_shapes.py"),
                           "--shape", "tiny", "--device", "cpu", "--len", "48", "--gen", "12",
                           "--prompts", "2", "--sample-prompts", "2", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("alignment step: 2 prompts x 2 candidates x 48 tokens")
    assert lines[2].startswith("sampling batch: 2 prompts") and "x 12 new tokens" in lines[2]


def test_gpu_report_of_a_run(tmp_path):
    """Per-rule jobs, summed wall time from the benchmark files, peak memory and sampling
    throughput from the logs."""
    r = tmp_path / "run"
    (r / "benchmarks" / "sample_sft").mkdir(parents=True)
    (r / "benchmarks" / "train_align_exo_rw").mkdir(parents=True)
    head = "s\th:m:s\tmax_rss\n"
    (r / "benchmarks" / "sample_sft" / "train.tsv").write_text(head + "12.5\t0:00:12\t100\n")
    (r / "benchmarks" / "train_align_exo_rw" / "bench.tsv").write_text(head + "30.0\t0:00:30\t1\n")
    (r / "logs" / "sample_sft").mkdir(parents=True)
    (r / "logs" / "sample_sft" / "train.log").write_text(
        "sampled 100 prompts x 2 in 10.0s (10.0 prompts/s)\n"
        "[exoflow] peak GPU memory (rank 0): 3.25 GiB\n")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_report.py"), str(r)],
                         capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines()[2:]}
    assert rows["sample_sft"] == ["1", "12.5", "3.25", "20.0 seq/s"]
    assert rows["train_align"][:3] == ["1", "30.0", "-"]
    assert rows["total"][:2] == ["2", "42.5"]
