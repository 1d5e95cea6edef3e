"""Job records (exoflow.provenance): results that say what made them, compared with the plan.

Unit tests on hand-made records, then the real CLI and Snakemake on the data stage (seconds):
results copied without .snakemake/ whose record agrees re-run nothing; a changed parameter makes
the dry run name the output, the key and both values, and the run re-make it. The same for a
training job's schedule keys: tests/test_e2e.py.
"""

import json
import shutil

import pytest

from exoflow.provenance import in_scope, record_path, stale_jobs, write_record
from tests.helpers import copy_workflow, planned_jobs, snakemake


def _job(tmp_path, name="a.jsonl", params=None, make=True):
    out = tmp_path / name
    if make:
        out.write_text("x\n")
    write_record("script", [str(out)], params or {"p": "1", "sec": '{"a":1,"b":{"c":2}}'},
                 {"split": "train"})
    return out


def test_a_record_that_agrees_is_not_stale(tmp_path):
    out = _job(tmp_path)
    assert record_path(out).name == ".exoflow-job.a.jsonl.json"
    rec = json.loads(record_path(out).read_text())
    assert rec["script"] == "script" and rec["wildcards"] == {"split": "train"}
    seen = []

    def expected(first_output):
        seen.append(first_output)
        return "r", {"p": "1", "sec": '{"a":1,"b":{"c":2}}', "only_the_rule_has_it": "x"}

    assert stale_jobs(tmp_path, expected) == [] and seen == [str(out)]


def test_a_changed_param_is_named_with_both_values(tmp_path):
    out = _job(tmp_path)
    stale = stale_jobs(tmp_path, lambda o: ("r", {"p": "2", "sec": '{"a":1,"b":{"c":3}}'}))
    assert len(stale) == 1 and stale[0].outputs == [str(out)]
    assert stale[0].line() == f"stale: {out} (r): p 1 -> 2; sec.b.c 2 -> 3; re-made"


def test_what_cannot_be_compared_is_left_to_snakemake(tmp_path):
    _job(tmp_path, "missing.jsonl", make=False)  # an output is missing: Snakemake makes it
    _job(tmp_path, "gone.jsonl")  # no planned rule makes it any more
    (tmp_path / ".exoflow-job.broken.json").write_text("{not json")
    assert stale_jobs(tmp_path, lambda o: None if o.endswith("gone.jsonl") else
                      ("r", {"p": "9"})) == []


@pytest.mark.slow  # ~40 s; tests/test_e2e.py checks copied results in the default suite
def test_copied_results_are_rechecked_not_rerun(tmp_path):
    """The data stage through Snakemake: records written by the scripts; a copy without
    .snakemake/ (as a fresh clone gets with cp -a) plans nothing; a changed key is listed and
    re-made; the record then agrees again."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    wd = copy_workflow(tmp_path / "a")
    cfg = ("--configfile", "configs/tiny.yaml")
    proc = snakemake(wd, "data", *cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((wd / "results/tiny/data/pref/.exoflow-job.train.jsonl.json").read_text())
    assert rec["script"] == "preprocess" and set(rec["params"]) == {"data", "seed", "code"}

    other = copy_workflow(tmp_path / "b")
    shutil.copytree(wd / "results", other / "results")  # copy2: times kept, as cp -a
    assert not (other / ".snakemake").exists()
    proc = snakemake(other, "data", "-n", *cfg)
    assert proc.returncode == 0 and planned_jobs(proc) == {}, proc.stderr[-3000:]
    assert "stale" not in proc.stderr

    (other / "more.yaml").write_text("data: {synthetic: {num_train: 500}}\n")
    proc = snakemake(other, "data", "-n", *cfg, "more.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("exoflow: stale: results/tiny/data/pref/train.jsonl (+1 more) (preprocess): "
            "data.synthetic.num_train 3000 -> 500; re-made") in proc.stderr
    assert planned_jobs(proc) == {"preprocess": 1, "pref_to_rewards": 1, "data_stats": 1,
                                  "data": 1}
    assert snakemake(other, "data", *cfg, "more.yaml").returncode == 0
    assert sum(1 for _ in open(other / "results/tiny/data/pref/train.jsonl")) == 500
    proc = snakemake(other, "data", "-n", *cfg, "more.yaml")
    assert planned_jobs(proc) == {} and "stale" not in proc.stderr


def test_a_stage_target_re_makes_only_its_stages_stale_outputs():
    r = "results/tiny"
    assert in_scope(f"{r}/data/pref/train.jsonl", r, ["data"])
    assert not in_scope(f"{r}/models/sft/config.json", r, ["data"])
    assert in_scope(f"{r}/models/sft/config.json", r, ["models"])
    assert not in_scope(f"{r}/models/align/x/ckpt1/config.json", r, ["labels"])
    for targets in ([], ["eval_all"], ["all"], [f"{r}/eval/x/ckpt1/reward.json"], ["data", "x"]):
        assert in_scope(f"{r}/models/align/x/ckpt1/config.json", r, targets), targets
