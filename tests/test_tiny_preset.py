"""The full tiny preset (`configs/tiny.yaml`, about 10 minutes on 2 cores): its rw alignment
runs, at the checkpoint picked on the validation prompts, must beat SFT on the gold reward of
the report prompts (paired 95 % interval above 0), as the README reports.

Marked slow (the default suite runs a shortened DAG in tests/test_e2e.py); run with
``pytest -m slow tests/test_tiny_preset.py`` or ``make test-all``.
"""

import csv

import pytest

from tests.helpers import copy_workflow, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("tiny"))
    proc = snakemake(wd, "eval_all", "--configfile", "configs/tiny.yaml", timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    with open(wd / "results" / "tiny" / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("run", ["exo-rw_nc2", "dpo-rw_nc2"])
def test_rw_run_beats_sft_gold(summary, run):
    """The checkpoint picked on the validation prompts raises the gold reward over SFT on the
    report prompts: the paired difference (same prompts, same sampling streams) has its whole
    95 % interval above 0."""
    ckpts = [r for r in summary if r["run"] == run]
    assert len(ckpts) == 3
    picked = [r for r in ckpts if r["selected"] == "True"]
    assert len(picked) == 1 and picked[0]["select_by"] == "gold"
    lo, mean, hi = (float(picked[0][k]) for k in
                    ("gold_vs_sft_ci95_low", "gold_vs_sft_mean", "gold_vs_sft_ci95_high"))
    assert lo > 0, (run, picked[0]["ckpt"], (lo, mean, hi))
