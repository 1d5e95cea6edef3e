"""Studies: run expansion, statistics across seeds, the paired bootstrap, the
validation/report split, by hand on small inputs."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from exoflow.config.check import ConfigError, check_config
from exoflow.io import write_json, write_records
from exoflow.plan import Plan, expand_grid
from exoflow.study import across_seeds, paired_bootstrap, study_tables
from exoflow.summary import summary_table

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "config.yaml").read_text())


def cfg(**align):
    c = copy.deepcopy(BASE)
    c["align"].update(align)
    return c


# ---- run expansion ------------------------------------------------------------------------

def test_seeds_name_runs_and_keep_the_top_level_seeds_names():
    plan = Plan(cfg(seeds=[42, 1, 7]))
    assert plan.align_runs()[:3] == ["exo-rw_nc2", "exo-rw_nc2_s1", "exo-rw_nc2_s7"]
    assert len(plan.align_runs()) == 12
    assert plan.run_seed("exo-rw_nc2_s7") == 7 and plan.run_configuration("exo-rw_nc2_s7") == "exo-rw_nc2"
    assert plan.runtime("exo-rw_nc2_s1").seed == 1
    assert plan.runtime("exo-rw_nc2").seed == 42
    assert plan.run_params("exo-rw_nc2_s1") == plan.run_params("exo-rw_nc2")
    # default: the top-level seed only, the names of before
    assert Plan(cfg()).align_runs() == ["exo-rw_nc2", "dpo-rw_nc2", "exo-pref_nc2", "dpo-pref_nc2"]


def test_grid_expands_deterministically_and_readably():
    sweep = {"name": "{loss}_nc{num_contrastive}", "loss": ["exo-rw", "dpo-rw"],
             "data": "rm_labels", "num_contrastive": [2, 4, 8]}
    got = expand_grid(sweep, "g")
    assert [n for n, _ in got] == ["exo-rw_nc2", "exo-rw_nc4", "exo-rw_nc8",
                                   "dpo-rw_nc2", "dpo-rw_nc4", "dpo-rw_nc8"]
    assert got[4][1] == {"loss": "dpo-rw", "data": "rm_labels", "num_contrastive": 4}
    with pytest.raises(ValueError, match="leaves out the swept key"):
        expand_grid({"name": "{loss}", "loss": ["exo-rw"], "lr": [1e-4, 2e-4]}, "g")
    with pytest.raises(ValueError, match="give a name template"):
        expand_grid({"loss": ["exo-rw"]}, "g")


def test_exact_run_sets_and_clashes():
    grid = [{"name": "{loss}_nc{num_contrastive}", "loss": ["exo-rw", "dpo-rw"],
             "data": "rm_labels", "num_contrastive": [4, 8]}]
    plan = Plan(cfg(grid=grid, only=["exo-rw_nc8", "exo-pref_nc2"]))
    assert plan.align_runs() == ["exo-rw_nc8", "exo-pref_nc2"]  # exactly these, this order
    assert plan.run_params("exo-rw_nc8").num_contrastive == 8
    with pytest.raises(ValueError, match="already defined with other"):  # same name, other params
        Plan(cfg(grid=[{"name": "{loss}_nc2", "loss": ["exo-rw"], "data": "rm_labels",
                        "lr": 1e-3}]))
    same = Plan(cfg(grid=[{"name": "{loss}_nc{num_contrastive}", "loss": ["exo-rw"],
                           "data": "rm_labels", "num_contrastive": [2, 4]}]))
    assert same.align_runs() == ["exo-rw_nc2", "dpo-rw_nc2", "exo-pref_nc2", "dpo-pref_nc2",
                                 "exo-rw_nc4"]  # the identical exo-rw_nc2 is one run
    with pytest.raises(ValueError, match="not runs of"):
        Plan(cfg(only=["nope"]))
    with pytest.raises(ValueError, match="defined twice"):  # a run named like a seed run
        Plan(cfg(seeds=[42, 1], runs={"a": {"loss": "exo-rw", "data": "rm_labels"},
                                       "a_s1": {"loss": "exo-rw", "data": "rm_labels"}}))
    with pytest.raises(ValueError, match="repeats a seed"):
        Plan(cfg(seeds=[1, 1]))
    bad = cfg(grid=[{"name": "x{lr}", "loss": "exo-rw", "data": "rm_labels", "lr": [-1.0, 1e-4]}])
    with pytest.raises(ConfigError, match="align.grid run x-1.0.lr must be > 0, got -1.0"):
        check_config(bad)


# ---- statistics by hand -------------------------------------------------------------------

def test_across_seeds_by_hand():
    s = across_seeds([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert s["mean"] == 2.0 and s["seeds"] == 3
    assert s["ci95_low"] == pytest.approx(2 - half, abs=1e-9)
    assert s["ci95_high"] == pytest.approx(2 + half, abs=1e-9)
    assert across_seeds([0.5]) == {"mean": 0.5, "ci95_low": 0.5, "ci95_high": 0.5, "seeds": 1}
    with pytest.raises(ValueError, match="not a finite number"):
        across_seeds([1.0, float("nan")])


def test_paired_bootstrap_by_hand():
    # a constant difference: the interval is the point
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    res = paired_bootstrap(a, a - 0.25, n_boot=500)
    assert res["diff"] == pytest.approx(0.25) and res["ci95_low"] == pytest.approx(0.25)
    assert res["ci95_high"] == pytest.approx(0.25)
    # 2 seeds x 2 prompts: the 16 equally likely resamples, each 1/16 > 2.5 %, so the 2.5 %
    # and 97.5 % points are the smallest and largest resample means, 1 and 11
    d = np.array([[1.0, 3.0], [5.0, 11.0]])
    res = paired_bootstrap(d, np.zeros_like(d), n_boot=4000, seed=3)
    assert res["diff"] == 5.0
    assert (res["ci95_low"], res["ci95_high"]) == (1.0, 11.0)
    # pairing: b = a + noise common to both would cancel; resampling prompts for a and b
    # separately would not. Differences constant per prompt: the interval reflects the prompt
    # spread only.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 50)) * 10
    res = paired_bootstrap(base + 1.0, base, n_boot=300)
    assert res["ci95_low"] == pytest.approx(1.0) and res["ci95_high"] == pytest.approx(1.0)


# ---- the split and the tables on small files ------------------------------------------------

def _write_eval(root, run, ckpt, step, rewards, gold, kl_exact):
    """eval/<run>/ckpt<k>/: reward.json + rewards.jsonl with one sample per prompt."""
    d = root / "eval" / run / f"ckpt{ckpt}"
    recs = [{"prompt": f"p{i}", "completions": ["y"], "sft_completions": ["y"],
             "rewards": [r], "sft_rewards": [0.0], "wins": [1.0 if r > 0 else 0.0],
             "logps": [-1.0], "sft_logps": [-1.5], "kl_exact": [k], "lengths": [3],
             "gold": [g], "sft_gold": [0.0]}
            for i, (r, g, k) in enumerate(zip(rewards, gold, kl_exact))]
    write_records(d / "rewards.jsonl", recs)
    write_json(d / "reward.json", {"run": run, "ckpt": ckpt, "step": step})
    return d / "reward.json"


def test_tables_select_on_validation_and_report_on_the_rest(tmp_path):
    # 4 prompts: the first 2 validate, the last 2 report
    sft = _write_eval(tmp_path, "sft", 0, 0, [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0])
    meta = {"a": {"configuration": "a", "seed": 42, "loss": "exo-rw", "data": "rm_labels",
                  "num_contrastive": 2},
            "a_s1": {"configuration": "a", "seed": 1, "loss": "exo-rw", "data": "rm_labels",
                     "num_contrastive": 2},
            "b": {"configuration": "b", "seed": 42, "loss": "dpo-rw", "data": "rm_labels",
                  "num_contrastive": 2},
            "b_s1": {"configuration": "b", "seed": 1, "loss": "dpo-rw", "data": "rm_labels",
                     "num_contrastive": 2}}
    js = [
        # run a, seed 42: ckpt1 best on validation gold (3 > 1), ckpt2 better on report
        _write_eval(tmp_path, "a", 1, 10, [1, 1, 1, 3], [3, 3, 2, 2], [1, 1, 1, 1]),
        _write_eval(tmp_path, "a", 2, 20, [2, 2, 5, 5], [1, 1, 9, 9], [2, 2, 2, 2]),
        _write_eval(tmp_path, "a_s1", 1, 10, [1, 1, 1, 1], [0, 0, 4, 4], [1, 1, 1, 1]),
        _write_eval(tmp_path, "a_s1", 2, 20, [1, 1, 1, 1], [1, 1, 6, 6], [3, 3, 3, 3]),
        _write_eval(tmp_path, "b", 1, 10, [0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]),
        _write_eval(tmp_path, "b", 2, 20, [0, 0, 0, 0], [0, 0, 2, 2], [1, 1, 1, 1]),
        _write_eval(tmp_path, "b_s1", 1, 10, [0, 0, 0, 0], [0, 0, 3, 3], [1, 1, 1, 1]),
        _write_eval(tmp_path, "b_s1", 2, 20, [0, 0, 0, 0], [5, 5, 0, 0], [1, 1, 1, 1]),
    ]
    # the judge's win rates: a and a_s1 at both checkpoints, b at ckpt2 of seed 42 only
    judged = []
    for run, k, rate in [("a", 1, 0.6), ("a", 2, 0.7), ("a_s1", 1, 0.4), ("a_s1", 2, 0.9),
                         ("b", 2, 0.5)]:
        judged.append(tmp_path / "judge" / run / f"ckpt{k}" / "sft" / "win_rate.json")
        write_json(judged[-1], {"run": run, "ckpt": k, "baseline": "sft", "win_rate": rate,
                                "ci95_low": rate - 0.1, "ci95_high": rate + 0.1})
    study, compare = study_tables(sft, js, meta, [("a", "b")], val_prompts=2,
                                  select_by="gold", n_boot=400, judge_jsons=judged)
    a = study[study["configuration"] == "a"].set_index("ckpt")
    # report-slice gold per seed: ckpt1 {42: 2, 1: 4} -> mean 3; ckpt2 {42: 9, 1: 6} -> 7.5
    assert a.loc["1", "gold_mean"] == 3.0 and a.loc["2", "gold_mean"] == 7.5
    half = 12.706204736174698 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * sd([2, 4]) / sqrt 2
    assert a.loc["1", "gold_ci95_low"] == pytest.approx(3 - half)
    # selected on validation: seed 42 -> ckpt1 (val gold 3 vs 1), seed 1 -> ckpt2 (1 vs 0)
    assert a.loc["selected", "gold_mean"] == pytest.approx((2 + 6) / 2)
    assert a.loc["2", "kl_exact_mean"] == 2.5 and a.loc["2", "kl_mean"] == 0.5
    # judge columns across seeds: ckpt2 (0.7, 0.9) -> 0.8; the picked checkpoints (seed 42
    # ckpt1: 0.6, seed 1 ckpt2: 0.9) -> 0.75
    assert a.loc["2", "judge_vs_sft_mean"] == pytest.approx(0.8)
    assert a.loc["selected", "judge_vs_sft_mean"] == pytest.approx(0.75)
    assert a.loc["2", "judge_vs_sft_ci95_low"] == pytest.approx(0.8 - 12.706204736174698 * 0.1)
    b = study[study["configuration"] == "b"].set_index("ckpt")
    assert b["judge_vs_sft_mean"].isna().all()  # not every seed judged: no mean of one
    # b seed 1 picks ckpt2 on validation (5 > 0) although its report gold is 0 there
    assert b.loc["selected", "gold_mean"] == pytest.approx((1 + 0) / 2)
    row = compare[(compare["metric"] == "gold") & (compare["ckpt"] == "2")].iloc[0]
    assert row["diff"] == pytest.approx(((9 - 2) + (6 - 0)) / 2)
    sel = compare[(compare["metric"] == "gold") & (compare["ckpt"] == "selected")].iloc[0]
    assert sel["diff"] == pytest.approx(((2 - 1) + (6 - 0)) / 2)
    assert sel["ci95_low"] <= sel["diff"] <= sel["ci95_high"]

    # summary.csv: the same split, one row per run and checkpoint
    ds = tmp_path / "eval" / "dataset"
    write_records(ds / "rewards.jsonl", [{"prompt": f"p{i}", "completions": ["c", "r"],
                                          "rewards": [1.0, 0.0], "lengths": [2, 1],
                                          "gold": [1.0, -1.0]} for i in range(4)])
    write_json(ds / "reward.json", {"kind": "dataset"})
    df = summary_table(sft, js, ds / "reward.json", meta, val_prompts=2, select_by="gold",
                       judge_jsons=judged)
    r = df[(df["run"] == "a") & (df["ckpt"] == 1)].iloc[0]
    assert r["judge_vs_sft"] == 0.6 and r["judge_vs_sft_ci95_high"] == pytest.approx(0.7)
    assert math.isnan(df[(df["run"] == "b_s1") & (df["ckpt"] == 2)].iloc[0]["judge_vs_sft"])
    assert r["gold_mean"] == 2.0 and r["val_score"] == 3.0 and bool(r["selected"])
    assert r["report_prompts"] == 2 and r["kl_exact"] == 1.0 and r["kl"] == 0.5
    assert not bool(df[(df["run"] == "a") & (df["ckpt"] == 2)].iloc[0]["selected"])


def test_other_prompts_or_too_many_validation_prompts_are_refused(tmp_path):
    """A checkpoint evaluated on other prompts than SFT (a stale file) would pair the wrong
    samples: refused, as is a split that leaves nothing to report."""
    from exoflow.io import read_records

    sft = _write_eval(tmp_path, "sft", 0, 0, [0, 0], [0, 0], [0, 0])
    a = _write_eval(tmp_path, "a", 1, 10, [1, 1], [1, 1], [1, 1])
    meta = {"a": {"configuration": "a", "seed": 42, "loss": "exo-rw", "data": "rm_labels",
                  "num_contrastive": 2}}
    recs = read_records(a.with_name("rewards.jsonl"))
    recs[1]["prompt"] = "another prompt"
    write_records(a.with_name("rewards.jsonl"), recs)
    with pytest.raises(ValueError, match="evaluated on other prompts"):
        study_tables(sft, [a], meta, [], val_prompts=1)
    with pytest.raises(ValueError, match="leave none to report"):
        study_tables(sft, [], meta, [], val_prompts=2)
