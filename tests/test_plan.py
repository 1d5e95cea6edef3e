"""The workflow's plan, tested without Snakemake or torch."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exoflow.config.constraints import ConfigError, check_constraints
from exoflow.errors import ParamsError
from exoflow.plan import Plan, rule_name
from tests.helpers import TINY, merged

ROOT = Path(__file__).resolve().parents[1]





def test_no_torch_or_snakemake_import():
    code = ("import sys, exoflow.plan, exoflow.config, exoflow.cli, exoflow.codehash, "
            "exoflow.config.check; "
            "print(sorted(m for m in ('torch', 'snakemake', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_runs_params_and_checkpoints():
    plan = Plan(merged(TINY))
    assert plan.align_runs() == ["exo-rw_nc2", "dpo-rw_nc2", "exo-pref_nc2", "dpo-pref_nc2"]
    p = plan.run_params("exo-pref_nc2")
    assert (p.loss, p.data, p.max_steps, p.save_every) == ("exo-pref", "p2r", 60, 20)
    assert plan.num_checkpoints("exo-rw_nc2") == 3
    assert plan.checkpoint_steps("exo-rw_nc2") == [20, 40, 60]
    assert plan.align_data("dpo-rw_nc2") == "results/tiny/data/rm_labels/train.jsonl"
    assert plan.align_ckpt_configs("dpo-rw_nc2")[-1] == \
        "results/tiny/models/align/dpo-rw_nc2/ckpt3/config.json"
    paper = Plan(merged())  # the original's checkpoints: the steps depend on the data size
    assert paper.num_checkpoints("exo-rw_nc2") == 10
    with pytest.raises(ParamsError, match="depend on the number of training prompts"):
        paper.checkpoint_steps("exo-rw_nc2")
    assert paper.checkpoint_steps("exo-rw_nc2", 43_835) == list(range(17, 171, 17))


def test_one_runs_override_stays_its_own():
    plan = Plan(merged(TINY, {"align": {"runs": {"exo-rw_nc2": {"loss": "exo-rw",
                                                                "data": "rm_labels",
                                                                "save_every": 30}}}}))
    assert plan.checkpoint_steps("exo-rw_nc2") == [30, 60]
    assert plan.checkpoint_steps("dpo-rw_nc2") == [20, 40, 60]


def test_ckpt_model_refuses_checkpoints_that_do_not_exist():
    plan = Plan(merged(TINY))
    assert plan.ckpt_model("sft", 0) == "results/tiny/models/sft/config.json"
    assert plan.ckpt_model("exo-rw_nc2", 3).endswith("exo-rw_nc2/ckpt3/config.json")
    with pytest.raises(ValueError, match="ckpt1..ckpt3"):
        plan.ckpt_model("exo-rw_nc2", 4)
    with pytest.raises(ValueError, match="checkpoint 0 only"):
        plan.ckpt_model("sft", 1)


def test_reference_cache_name_gives_back_the_float():
    plan = Plan(merged(TINY, {"align": {"defaults": {"temp": 0.1}}}))
    name = plan.ref_cache_name("exo-rw_nc2")
    assert name == "rm_labels_t0.1_l256_g64_e1.jsonl"
    assert float(name.split("_t")[1].split("_l")[0]) == 0.1
    assert plan.ref_cache_inputs("exo-pref_nc2") == [
        "results/tiny/data/ref_logps/p2r_t0.1_l256_g64_e1.jsonl"]
    faithful = Plan(merged(TINY, {"align": {"defaults": {"eos_after_cut": False}}}))
    assert faithful.ref_cache_name("exo-rw_nc2") == "rm_labels_t0.8_l256_g64_e0.jsonl"
    off = Plan(merged(TINY, {"align": {"precompute_ref": False}}))
    assert off.ref_cache_inputs("exo-rw_nc2") == []


def test_a_visited_cache_is_shared_by_the_runs_that_visit_the_same_records():
    paper = Plan(merged({"align": {"seeds": [42, 1]}}))
    names = {r: paper.ref_cache_name(r) for r in paper.align_runs()}
    # seed 42, 175 steps of 128 prompts, random batches: EXO and DPO on rm_labels share one
    assert names["exo-rw_nc2"] == names["dpo-rw_nc2"] == \
        "rm_labels_t0.8_l512_g200_e0_v42s175b128r.jsonl"
    assert names["exo-pref_nc2_s1"] == "p2r_t0.8_l512_g200_e0_v1s175b128r.jsonl"
    assert len(set(names.values())) == 4  # 2 data sets x 2 seeds
    # a run of other steps, batch or grouping visits others
    other = Plan(merged({"align": {"runs": {"dpo-rw_nc2": {"max_steps": 100}}}}))
    assert other.ref_cache_name("dpo-rw_nc2").endswith("_v42s100b128r.jsonl")
    assert Plan(merged(TINY)).ref_cache_name("exo-rw_nc2") == "rm_labels_t0.8_l256_g64_e1.jsonl"


def test_data_params_per_split():
    """A split sees the other split's keys at their defaults, so changing them re-runs nothing
    of it."""
    plan = Plan(merged(TINY, {"data": {"max_train": 10, "max_test": 5}}))
    train, test = plan.data_params("train"), plan.data_params("test")
    assert (train.max_train, train.max_test) == (10, None)
    assert (test.max_train, test.max_test) == (None, 5)
    assert (train.synthetic.num_train, train.synthetic.num_test) == (3000, 1000)
    assert (test.synthetic.num_train, test.synthetic.num_test) == (1000, 300)
    other = Plan(merged(TINY, {"data": {"max_test": 7, "synthetic": {"num_test": 9}}}))
    assert other.data_params("train") == Plan(merged(TINY)).data_params("train")
    local = Plan(merged({"data": {"source": "local", "path": "/x"}}))
    assert local.data_params("train").synthetic == Plan(merged()).data_params(
        "train").synthetic.__class__()


def test_eval_targets():
    plan = Plan(merged(TINY))
    targets = plan.eval_all_targets()
    assert targets[:4] == ["results/tiny/summary.csv", "results/tiny/summary.png",
                           "results/tiny/eval/sft/ckpt0/reward.json",
                           "results/tiny/eval/dataset/reward.json"]
    assert len(targets) == 4 + 4 * 3
    two = Plan(merged(TINY, {"eval": {"checkpoints": 2}}))
    assert two.eval_checkpoints("exo-rw_nc2") == [1, 2]
    # what sampling and scoring read of eval: the checkpoints and the split change neither
    other = Plan(merged(TINY, {"eval": {"checkpoints": 1, "val_prompts": 3, "select_by": "reward"}}))
    assert two.cfg.eval.generation() == other.cfg.eval.generation()
    assert two.eval_scoring() == other.eval_scoring()


def test_launcher_and_gpu_prefix():
    assert Plan(merged(TINY), python="py").train_launcher() == "py"
    plan = Plan(merged({"engine": {"gpus": 4}}), python="'/a b/python'")
    assert plan.train_launcher() == \
        "'/a b/python' -m torch.distributed.run --standalone --nproc_per_node 4"
    assert plan.gpu_prefix(1) == "'/a b/python' -m exoflow.gpus run --n 1 -- "
    assert plan.runtime().dtype == "fp16" and plan.runtime().seed == 42  # the original's fp16
    ref = plan.ref_runtime()
    assert (ref.engine.deepspeed, ref.engine.gpus, ref.dtype) == ("configs/deepspeed/zero2.json",
                                                                  1, "fp16")
    assert ref.engine == ref.engine.__class__(deepspeed=ref.engine.deepspeed, gpus=1)


def test_rule_names_and_reserved_runs():
    assert rule_name("train_align", "exo-rw_nc2") == "train_align_exo_rw_nc2"
    assert rule_name("train_align", "a.b c") == "train_align_a_b_c"
    with pytest.raises(ConfigError, match=r"align.runs: \['sft'\] are reserved names"):
        check_constraints(Plan(merged(TINY, {"align": {"runs": {"sft": {"loss": "exo-rw",
                                                                       "data": "rm_labels"}}}})))


def test_study_compare_names_configurations():
    plan = Plan(merged(TINY, {"study": {"compare": [["exo-rw_nc2", "exo-rw_nc3"]]}}))
    with pytest.raises(ConfigError, match=r"^study.compare: 'exo-rw_nc3' is not a configuration "
                                          r"\(those are \['dpo-pref_nc2', "):
        check_constraints(plan)


def test_smol_preset_aligns_at_its_validation_picks_and_its_grid_adds_each_lr():
    """configs/smol_hh.yaml's lrs are the ones docs/RESULTS.md reports as picked on the
    validation prompts; configs/smol_lr_grid.yaml over it trains every loss at 2e-5, 1e-4 and
    5e-4 on its own data, beside the preset's four runs."""
    smol = yaml.safe_load((ROOT / "configs" / "smol_hh.yaml").read_text())
    grid = yaml.safe_load((ROOT / "configs" / "smol_lr_grid.yaml").read_text())
    plan = Plan(merged(smol))
    picked = {r: plan.run_params(r).lr for r in plan.align_runs()}
    assert picked == {"exo-rw_nc2": 1e-4, "dpo-rw_nc2": 2e-5, "exo-pref_nc2": 1e-4,
                      "dpo-pref_nc2": 1e-4}
    plan = Plan(merged(smol, grid))
    runs = plan.align_runs()
    assert runs[:4] == list(picked)
    swept = {r: (plan.run_params(r).loss, plan.run_params(r).data, plan.run_params(r).lr)
             for r in runs[4:]}
    assert sorted(swept.values()) == sorted(
        (loss, "rm_labels" if loss.endswith("-rw") else "p2r", lr)
        for loss in ("exo-rw", "dpo-rw", "exo-pref", "dpo-pref") for lr in (2e-5, 1e-4, 5e-4))
    assert swept["exo-rw_nc2_lr0.0001"] == ("exo-rw", "rm_labels", 1e-4)


def test_the_run_table_shows_an_override_an_overlay_left_behind():
    """configs/smol_hh.yaml's dpo-rw_nc2 lr (2e-5) survives an overlay that sets
    align.defaults.lr: the dry run's table marks it, and lr is a summary column."""
    smol = yaml.safe_load((ROOT / "configs" / "smol_hh.yaml").read_text())
    plan = Plan(merged(smol, {"align": {"defaults": {"lr": 3.0e-4}}}))
    table = plan.run_table()
    assert table[0] == "exo-rw_nc2 (seed 42): loss=exo-rw data=rm_labels num_contrastive=2 lr=0.0003"
    assert table[1] == "dpo-rw_nc2 (seed 42): loss=dpo-rw data=rm_labels num_contrastive=2 lr=2e-05*"
    assert plan.varying_keys() == ["lr"]
    meta = plan.run_meta()
    assert meta["dpo-rw_nc2"]["params"] == {"lr": 2e-5} and meta["exo-rw_nc2"]["params"] == {"lr": 3e-4}
    sweep = Plan(merged(TINY, {"align": {"runs": {"exo-rw_nc2": {
        "loss": "exo-rw", "data": "rm_labels", "beta_r": 0.1}}}}))
    assert sweep.varying_keys() == ["lr", "beta_r"]
    assert sweep.run_table()[0].endswith("lr=0.0001 beta_r=0.1*")
    ipo = Plan(merged(TINY, {"align": {"runs": {"ipo_nc2": {
        "loss": {"name": "ipo", "tau": 0.05}, "data": "p2r"}}}}))
    assert ipo.run_table()[-1].startswith("ipo_nc2 (seed 42): loss=ipo(tau=0.05) data=p2r ")


def test_a_runs_loss_is_checked_by_the_plan():
    """A loss's own hyperparameters in the run's entry; a pairwise loss with N > 2, an unknown
    loss or hyperparameter, a value out of bounds: refused before anything runs."""
    runs = {"ipo_nc2": {"loss": {"name": "ipo", "tau": 0.05}, "data": "p2r"},
            "cdpo_nc2": {"loss": "cdpo", "data": "p2r"}}
    plan = Plan(merged(TINY, {"align": {"runs": runs, "only": ["ipo_nc2", "cdpo_nc2"]}}))
    assert plan.run_loss("ipo_nc2").tau == 0.05
    assert plan.run_loss("cdpo_nc2").label_smoothing == 0.1  # its default
    assert plan.run_loss("cdpo_nc2").beta_pi == plan.run_params("cdpo_nc2").beta_pi
    assert plan.run_meta()["ipo_nc2"]["loss"] == "ipo(tau=0.05)"
    for entry, message in (
            ({"loss": "ipo", "num_contrastive": 4}, "ipo compares one winner with one loser"),
            ({"loss": {"name": "ipo", "beta": 1}}, "beta: not a hyperparameter of loss ipo"),
            ({"loss": "robust-dpo"}, "unknown loss 'robust-dpo'"),
            ({"loss": {"name": "rdpo", "label_smoothing": 0.5}}, "must be < 0.5"),
            ({"loss": {"tau": 0.1}}, "a mapping needs the loss's name")):
        bad = {"align": {"runs": {"x": dict({"data": "p2r"}, **entry)}, "only": ["x"]}}
        with pytest.raises((ParamsError, ConfigError), match=message):
            check_constraints(Plan(merged(TINY, bad)))
