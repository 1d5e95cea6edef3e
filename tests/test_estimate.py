"""The cost estimate (exoflow.estimate): the probes' configs, the planned units, the fit and
the projection by hand; the whole command against a real run of the same config (slow)."""

import copy
import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exoflow.config.check import check_config
from exoflow.estimate import fit, job_units, load_config, probe_overlay, project
from tests.helpers import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parents[1]
# jobs whose time follows the samples' lengths: an upper bound (every sample to max_new_tokens)
SAMPLED = ("sample_sft", "label_rewards", "sample_checkpoint", "eval_checkpoint")


def tiny(extra: dict | None = None) -> dict:
    c = load_config([ROOT / "configs" / "tiny.yaml"], ROOT)
    if extra:
        c["align"]["runs"].update(extra)
    return c


def test_fit_through_two_probes():
    assert fit(1, 10.0, 2, 14.0) == (6.0, 4.0)
    assert fit(1, 10.0, 2, 9.0) == (10.0, 0.0)  # faster with more: noise, flat at the larger
    assert fit(1, 2.0, 3, 10.0) == (0.0, 10.0 / 3)  # a < 0: through the origin and the larger
    assert fit(1, 5.0, 1, 7.0) == (7.0, 0.0)


def test_probes_are_the_config_shortened_with_the_same_shapes():
    config = tiny({"own": {"loss": "exo-rw", "data": "rm_labels", "max_steps": 40,
                           "save_every": 10, "batch_size": 16, "micro_batch_size": 16}})
    config["align"]["seeds"] = [42, 1, 2]
    plan = check_config(copy.deepcopy(config))
    assert len(plan.align_runs()) == 15
    for scale in (1, 2):
        probe = check_config(probe_overlay(config, plan, scale))
        assert probe.cfg.run_name == f"tiny_estimate{scale}"
        assert probe.align_runs() == ["exo-rw_nc2", "dpo-rw_nc2", "exo-pref_nc2",
                                      "dpo-pref_nc2", "own"]  # one seed
        for run in probe.align_runs():
            p, real = probe.run_params(run), plan.run_params(run)
            assert (p.max_steps, p.num_checkpoints) == (2 * scale, 1)
            # what sets a step's cost is kept
            for key in ("batch_size", "micro_batch_size", "max_len", "max_gen_len",
                        "num_contrastive", "loss", "group_by_length"):
                assert getattr(p, key) == getattr(real, key), (run, key)
        assert (probe.cfg.sft.max_steps, probe.cfg.rm.max_steps) == (2 * scale, 2 * scale)
        assert probe.cfg.data.max_train == 64 * scale  # the largest batch: sample's 64
        assert probe.cfg.sample.max_prompts == 64 * scale
        assert probe.cfg.eval.num_prompts == 64 * scale  # eval.batch_size 64
        assert (probe.cfg.eval.checkpoints, probe.cfg.eval.val_prompts) == (1, 0)
        assert probe.cfg.eval.generation() == plan.cfg.eval.generation()
        assert probe.cfg.sft.micro_batch_size == plan.cfg.sft.micro_batch_size


def test_planned_units_by_hand():
    plan = check_config(tiny())
    u = job_units(plan, n_train=3000, n_test=300)
    # sft: 3 epochs x ceil(3000 / 32) = 94 steps each; rm: 6 epochs
    assert u[("train_sft", "bench")] == ("steps", 282)
    assert u[("train_rm", "bench")] == ("steps", 564)
    assert u[("train_align", "exo-rw_nc2")] == ("steps", 60)
    assert u[("sample_sft", "train")] == ("prompts", 3000)
    assert u[("precompute_ref", "p2r_t0.8_l256_g64_e1")] == ("records", 3000)
    assert u[("eval_checkpoint", "dpo-pref_nc2/ckpt3")] == ("prompts", 256)
    assert sum(r == "eval_checkpoint" for r, _ in u) == 13  # 4 runs x 3 + SFT
    config = tiny()
    config["sample"]["max_prompts"] = 500
    quick = check_config(config)
    assert job_units(quick, 3000, 300)[("label_rewards", "train")] == ("prompts", 500)
    assert job_units(quick, 3000, 300)[("precompute_ref", "rm_labels_t0.8_l256_g64_e1")] == \
        ("records", 500)


def test_projection_by_hand():
    plan = check_config(tiny())
    probe1 = check_config(probe_overlay(tiny(), plan, 1))
    probe2 = check_config(probe_overlay(tiny(), plan, 2))
    u1, u2 = job_units(probe1, 64, 128), job_units(probe2, 128, 128)
    # sample_sft: 64 prompts in 10 s, 128 in 16 s -> 4 + 3000 * 6 / 64
    b1 = {("sample_sft", "train"): (10.0, 500.0), ("train_sft", "bench"): (8.0, 700.0)}
    b2 = {("sample_sft", "train"): (16.0, 520.0), ("train_sft", "bench"): (9.0, 710.0)}
    rows = {r.rule: r for r in project(plan, 3000, 300, [(u1, b1), (u2, b2)],
                                       {("train_sft", "bench"): 0.25})}
    assert set(rows) == {"sample_sft", "train_sft"}
    assert rows["sample_sft"].seconds == pytest.approx(4 + 3000 * 6 / 64)
    assert rows["sample_sft"].peak_mb == 520.0
    # training: the second probe's 9 s less its 4 steps at 0.25 s, plus 282 of them
    assert rows["train_sft"].seconds == pytest.approx(9 - 4 * 0.25 + 282 * 0.25)
    assert (rows["train_sft"].jobs, rows["train_sft"].units) == (1, 282)


def _stage_seconds(results: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for f in (results / "benchmarks").rglob("*.tsv"):
        rule = f.relative_to(results / "benchmarks").parts[0]
        rows = list(csv.DictReader(open(f), delimiter="\t"))
        out[rule] = out.get(rule, 0.0) + float(rows[-1]["s"])
    return out


def _hms(text: str) -> float:
    h, m, s = map(int, text.split(":"))
    return 3600 * h + 60 * m + s


@pytest.mark.slow
def test_the_estimate_is_within_a_factor_of_the_real_run(tmp_path):
    """`python -m exoflow.estimate` on a shortened tiny, then the real run of that config:
    the projected total within 0.5x..2.5x of the real one, each stage that took 10 s or more
    within 0.33x..3x, the sampled ones 0.8x..8x (an upper bound: the probes' models are barely
    trained and sample to max_new_tokens); measured on tiny in full: README."""
    wd = copy_workflow(tmp_path)
    (wd / "mid.yaml").write_text(yaml.safe_dump({
        "run_name": "mid", "data": {"synthetic": {"num_train": 1200, "num_test": 128}},
        "sft": {"epochs": 2}, "rm": {"epochs": 2},
        "align": {"defaults": {"max_steps": 24, "save_every": 8}},
        "eval": {"num_prompts": 96, "val_prompts": 32, "checkpoints": 2}}))
    cfg = ["--configfile", "configs/tiny.yaml", "mid.yaml"]
    est = subprocess.run([sys.executable, "-m", "exoflow.estimate", *cfg, "--cores", "2"],
                         cwd=wd, capture_output=True, text=True, timeout=1800)
    assert est.returncode == 0, (est.stdout + est.stderr)[-3000:]
    assert not list((wd / "results").glob("mid_estimate*")), "the probes are deleted"
    projected = {m.group(1): _hms(m.group(2)) for m in re.finditer(
        r"^(\w+)\s+\d+\s+\S+ \w+\s+(\d+:\d\d:\d\d)", est.stdout, re.M)}
    total = _hms(re.search(r"total \(one job at a time\)\s+(\S+)", est.stdout).group(1))
    proc = snakemake(wd, "eval_all", *cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    real = _stage_seconds(wd / "results" / "mid")
    table = {rule: (projected.get(rule), seconds) for rule, seconds in real.items()}
    assert 0.5 <= total / sum(real.values()) <= 2.5, (total, table)
    for rule, seconds in real.items():
        if seconds < 10:
            continue
        ratio = projected[rule] / seconds
        if rule in SAMPLED:  # the probes' barely trained models rarely stop early
            assert 0.8 <= ratio <= 8, (rule, table)
        else:
            assert 0.33 <= ratio <= 3, (rule, table)
